"""Enrichment: expected gear, the join with the car dimensions, unknown cars, the output."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from carstream import schemas
from carstream.config import Topics
from carstream.stages import enrich
from tests.unit.messages import (
    KNOWN_CAR,
    UNKNOWN_CAR,
    Message,
    car_profiles,
    headers,
    kafka_records,
    sensor_event,
)


@pytest.fixture(scope="module")
def profiles(spark: SparkSession) -> DataFrame:
    return car_profiles(spark)


def test_expected_gear_rounds_half_up(spark: SparkSession) -> None:
    speeds = [0, 14, 15, 44, 45, 200]
    frame = spark.createDataFrame([(s,) for s in speeds], "speed int")
    gears = [row[0] for row in frame.select(enrich.expected_gear(F.col("speed"))).collect()]
    assert gears == [0, 0, 1, 1, 2, 7]
    assert frame.select(enrich.expected_gear(F.col("speed"))).schema[0].dataType.typeName() == (
        "integer"
    )


def test_car_profiles_name_brand_model_color(profiles: DataFrame) -> None:
    assert [row.asDict() for row in profiles.collect()] == [
        {
            "car_id": KNOWN_CAR,
            "driver_id": 123456789,
            "brand_name": "Kia",
            "model_name": "Rio",
            "color_name": "Gray",
        }
    ]


def test_enriched_record_is_json_keyed_by_car(spark: SparkSession, profiles: DataFrame) -> None:
    event = sensor_event(speed=45, gear=3)
    (record,) = enrich.kafka_records(kafka_records(spark, [event]), profiles, Topics()).collect()
    assert record["topic"] == "samples-enriched"
    assert bytes(record["key"]) == str(KNOWN_CAR).encode()
    assert record["headers"] is None
    value = json.loads(bytes(record["value"]))
    assert list(value) == list(schemas.ENRICHED_EVENT.names)
    assert value == {
        **event,
        "driver_id": 123456789,
        "brand_name": "Kia",
        "model_name": "Rio",
        "color_name": "Gray",
        "expected_gear": 2,
    }


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (sensor_event(car_id=UNKNOWN_CAR), f"unknown car: {UNKNOWN_CAR}"),
        ("{not json", "malformed JSON"),
        ({"event_id": "e-1"}, "missing field: event_time"),
        (sensor_event(speed="fast"), "wrong type: speed must be an integer, got the string 'fast'"),
        (
            sensor_event(speed=2**31 - 1),
            f"out of range: speed = {2**31 - 1}, must be within 0..200",
        ),
    ],
    ids=["unknown car", "malformed JSON", "missing field", "wrong type", "out of range"],
)
def test_bad_event_goes_to_dead_letters_unchanged(
    spark: SparkSession, profiles: DataFrame, message: Message, reason: str
) -> None:
    records = kafka_records(spark, [sensor_event(), message], topic="sensors-sample")
    good, dead = enrich.kafka_records(records, profiles, Topics(dlq="dead")).collect()
    assert good["topic"] == "samples-enriched"
    assert dead["topic"] == "dead"
    original = records.collect()[1]
    assert (dead["key"], dead["value"]) == (original["key"], original["value"])
    assert headers(dead) == {
        "carstream.dlq.stage": "enrich",
        "carstream.dlq.reason": reason,
        "carstream.dlq.topic": "sensors-sample",
        "carstream.dlq.partition": "0",
        "carstream.dlq.offset": "101",
    }
