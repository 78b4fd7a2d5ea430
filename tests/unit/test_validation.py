"""Parsing JSON messages against their shape, and the reason given for each bad one."""

from __future__ import annotations

from typing import Any

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from carstream import validation
from carstream.schemas import ALERT, ENRICHED_EVENT, SENSOR_EVENT
from tests.unit.messages import alert, as_json, enriched_event, headers, kafka_records, sensor_event

EVENT = as_json(sensor_event())

VALID_SENSOR_EVENTS: dict[str, Any] = {
    "typical": sensor_event(),
    "lowest values": sensor_event(speed=0, rpm=0, gear=1),
    "highest values": sensor_event(speed=200, rpm=8000, gear=7),
    "zone offset": sensor_event(event_time="2024-05-01T14:07:30+02:00"),
    "no fraction": sensor_event(event_time="2024-05-01T12:07:30Z"),
    "extra field": sensor_event(comment="ignored"),
}

BAD_SENSOR_EVENTS: dict[str, tuple[Any, str]] = {
    "truncated": ('{"event_id": "e-1", "speed": ', "malformed JSON"),
    "not JSON": ("car 42 goes fast", "malformed JSON"),
    "array": ("[" + EVENT + "]", "malformed JSON: not a JSON object"),
    "number": ("42", "malformed JSON: not a JSON object"),
    "empty": ("", "malformed JSON: empty message"),
    "tombstone": (None, "malformed JSON: empty message"),
    "empty object": ({}, "missing field: event_id"),
    "no speed": (
        {k: v for k, v in sensor_event().items() if k != "speed"},
        "missing field: speed",
    ),
    "null gear": (sensor_event(gear=None), "missing field: gear is null"),
    "string speed": (
        sensor_event(speed="fast"),
        "wrong type: speed must be an integer, got the string 'fast'",
    ),
    "quoted number": (
        sensor_event(rpm="3000"),
        "wrong type: rpm must be an integer, got the string '3000'",
    ),
    "fractional speed": (
        sensor_event(speed=12.5),
        "wrong type: speed must be an integer, got '12.5'",
    ),
    "car id beyond int": (
        sensor_event(car_id=2**40),
        f"wrong type: car_id must be an integer, got '{2**40}'",
    ),
    "event time not ISO": (
        sensor_event(event_time="yesterday"),
        "wrong type: event_time must be an ISO-8601 timestamp string, got 'yesterday'",
    ),
    "event time without zone": (
        sensor_event(event_time="2024-05-01T12:07:30"),
        "wrong type: event_time must be an ISO-8601 timestamp string, got '2024-05-01T12:07:30'",
    ),
    "event time not a date": (
        sensor_event(event_time="2024-13-01T12:07:30Z"),
        "wrong type: event_time must be an ISO-8601 timestamp string, got '2024-13-01T12:07:30Z'",
    ),
    "speed too high": (
        sensor_event(speed=201),
        "out of range: speed = 201, must be within 0..200",
    ),
    "negative speed": (
        sensor_event(speed=-1),
        "out of range: speed = -1, must be within 0..200",
    ),
    "rpm too high": (
        sensor_event(rpm=8001),
        "out of range: rpm = 8001, must be within 0..8000",
    ),
    "gear zero": (sensor_event(gear=0), "out of range: gear = 0, must be within 1..7"),
    "gear eight": (sensor_event(gear=8), "out of range: gear = 8, must be within 1..7"),
    "type checked before range": (
        sensor_event(speed=500, gear="top"),
        "wrong type: gear must be an integer, got the string 'top'",
    ),
}


@pytest.fixture(scope="module")
def parsed_sensor_events(spark: SparkSession) -> dict[str, Row]:
    cases = [*VALID_SENSOR_EVENTS.items(), *((k, v[0]) for k, v in BAD_SENSOR_EVENTS.items())]
    records = kafka_records(spark, [message for _, message in cases])
    rows = validation.parse_messages(records, SENSOR_EVENT).collect()
    return {name: row for (name, _), row in zip(cases, rows, strict=True)}


@pytest.mark.parametrize("case", VALID_SENSOR_EVENTS)
def test_valid_sensor_event_is_typed(parsed_sensor_events: dict[str, Row], case: str) -> None:
    row = parsed_sensor_events[case]
    expected = VALID_SENSOR_EVENTS[case]
    assert row["reason"] is None
    assert {name: row[name] for name in SENSOR_EVENT.names} == {
        name: expected[name] for name in SENSOR_EVENT.names
    }


@pytest.mark.parametrize("case", BAD_SENSOR_EVENTS)
def test_bad_sensor_event_has_reason(parsed_sensor_events: dict[str, Row], case: str) -> None:
    row = parsed_sensor_events[case]
    assert row["reason"] == BAD_SENSOR_EVENTS[case][1]
    assert all(row[name] is None for name in SENSOR_EVENT.names)


def test_source_record_is_kept(spark: SparkSession) -> None:
    records = kafka_records(spark, ["not json"], topic="t", partition=3)
    (row,) = validation.parse_messages(records, SENSOR_EVENT).collect()
    assert row["source"].asDict() == {
        "key": bytearray(b"k100"),
        "value": bytearray(b"not json"),
        "topic": "t",
        "partition": 3,
        "offset": 100,
    }


def test_enriched_and_alert_shapes(spark: SparkSession) -> None:
    no_color = {k: v for k, v in enriched_event().items() if k != "color_name"}
    enriched = kafka_records(
        spark, [enriched_event(), enriched_event(expected_gear=8), no_color, sensor_event()]
    )
    reasons = [r["reason"] for r in validation.parse_messages(enriched, ENRICHED_EVENT).collect()]
    assert reasons == [
        None,
        "out of range: expected_gear = 8, must be within 0..7",
        "missing field: color_name",
        "missing field: driver_id",
    ]
    alerts = kafka_records(spark, [alert(rules=["speed", "rpm"]), alert(rules=5)])
    rows = validation.parse_messages(alerts, ALERT).collect()
    assert rows[0]["rules"] == ["speed", "rpm"]
    assert rows[0]["reason"] is None
    assert rows[1]["reason"] == "wrong type: rules must be an array of strings, got '5'"


def test_routing_to_output_and_dead_letter_topics(spark: SparkSession) -> None:
    records = kafka_records(spark, [sensor_event(car_id=42), "oops"], topic="in", partition=1)
    parsed = validation.parse_messages(records, SENSOR_EVENT)
    routed = validation.to_kafka_records(
        parsed,
        stage="test",
        output_topic="out",
        dlq_topic="dlq",
        key=F.col("car_id").cast("string"),
        value=F.concat(F.lit("speed="), F.col("speed").cast("string")),
    ).collect()
    good, dead = routed
    assert (good["topic"], bytes(good["key"]), bytes(good["value"])) == ("out", b"42", b"speed=45")
    assert good["headers"] is None
    assert (dead["topic"], bytes(dead["key"]), bytes(dead["value"])) == ("dlq", b"k101", b"oops")
    assert headers(dead) == {
        "carstream.dlq.stage": "test",
        "carstream.dlq.reason": "malformed JSON",
        "carstream.dlq.topic": "in",
        "carstream.dlq.partition": "1",
        "carstream.dlq.offset": "101",
    }
    only_dead = validation.dead_letters(parsed, stage="test", dlq_topic="dlq").collect()
    assert [(r["topic"], bytes(r["value"]), headers(r)) for r in only_dead] == [
        ("dlq", b"oops", headers(dead))
    ]


def test_event_timestamp_parses_iso_instants(spark: SparkSession) -> None:
    texts = ["2024-05-01T12:07:30.250Z", "2024-05-01T14:07:30.250+02:00", "2024-05-01 12:07:30"]
    frame = spark.createDataFrame([(t,) for t in texts], "text string")
    instants = [
        row[0]
        for row in frame.select(
            F.date_format(validation.event_timestamp(F.col("text")), "HH:mm:ss.SSS")
        ).collect()
    ]
    assert instants == ["12:07:30.250", "12:07:30.250", None]
