"""Hand-built Kafka records and JSON messages for the unit tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession

from carstream import schemas
from carstream.config import DimsSettings
from carstream.stages import dims, enrich

Message = str | bytes | Mapping[str, Any] | None
"""A Kafka record value: JSON text, raw bytes, a JSON object to serialize, or a tombstone."""

KAFKA_RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long"

KNOWN_CAR = 1234567
UNKNOWN_CAR = 7654321


def sensor_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "event_time": "2024-05-01T12:07:30.250Z",
        "car_id": KNOWN_CAR,
        "speed": 45,
        "rpm": 3000,
        "gear": 2,
    }
    event.update(fields)
    return event


def enriched_event(**fields: Any) -> dict[str, Any]:
    event = sensor_event()
    event.update(
        driver_id=123456789,
        brand_name="Kia",
        model_name="Rio",
        color_name="Gray",
        expected_gear=2,
    )
    event.update(fields)
    return event


def alert(**fields: Any) -> dict[str, Any]:
    event = enriched_event(rules=["speed"])
    event.update(fields)
    return event


def as_json(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def kafka_records(
    spark: SparkSession,
    values: Sequence[Message],
    *,
    topic: str = "sensors-sample",
    partition: int = 0,
) -> DataFrame:
    """Records as Spark's Kafka source gives them; offsets count from 100, keys are k<offset>."""
    rows = []
    for index, value in enumerate(values):
        if isinstance(value, Mapping):
            value = as_json(value)
        if isinstance(value, str):
            value = value.encode()
        offset = 100 + index
        rows.append((f"k{offset}".encode(), value, topic, partition, offset))
    return spark.createDataFrame(rows, KAFKA_RECORD_SCHEMA)


def headers(record: Row) -> dict[str, str]:
    return {header["key"]: bytes(header["value"]).decode() for header in record["headers"] or []}


def car_profiles(spark: SparkSession) -> DataFrame:
    """The profile of KNOWN_CAR (driver 123456789, a gray Kia Rio) and of no other car."""
    cars = spark.createDataFrame([(KNOWN_CAR, 123456789, 6, 3)], schemas.CARS)
    built = dims.build(spark, DimsSettings(num_cars=1, seed=1))
    return enrich.car_profiles(dims.Dimensions(built.car_models, built.car_colors, cars))
