"""Alert detection: the rules, the any/all combinator, the alert record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pyspark.sql import SparkSession

from carstream import schemas, validation
from carstream.config import DetectSettings, Topics
from carstream.stages import detect
from tests.unit.messages import Message, enriched_event, headers, kafka_records

# speed > 120, expected_gear != gear, rpm > 6000 (the defaults).
EVENTS: dict[str, dict[str, Any]] = {
    "none": enriched_event(event_id="none", speed=120, expected_gear=4, gear=4, rpm=6000),
    "speed": enriched_event(event_id="speed", speed=121, expected_gear=4, gear=4, rpm=6000),
    "gear": enriched_event(event_id="gear", speed=100, expected_gear=3, gear=4, rpm=100),
    "rpm": enriched_event(event_id="rpm", speed=100, expected_gear=3, gear=3, rpm=6001),
    "speed+gear": enriched_event(event_id="speed+gear", speed=180, expected_gear=6, gear=2),
    "all": enriched_event(event_id="all", speed=200, expected_gear=7, gear=1, rpm=8000),
}


def fired(spark: SparkSession, settings: DetectSettings) -> dict[str, list[str]]:
    parsed = validation.parse_messages(
        kafka_records(spark, list(EVENTS.values()), topic="samples-enriched"),
        schemas.ENRICHED_EVENT,
    )
    return {row["event_id"]: row["rules"] for row in detect.detect(parsed, settings).collect()}


def test_any_rule_makes_an_alert(spark: SparkSession) -> None:
    assert fired(spark, DetectSettings(combinator="any")) == {
        "speed": ["speed"],
        "gear": ["gear"],
        "rpm": ["rpm"],
        "speed+gear": ["speed", "gear"],
        "all": ["speed", "gear", "rpm"],
    }


def test_all_rules_make_an_alert(spark: SparkSession) -> None:
    assert fired(spark, DetectSettings(combinator="all")) == {"all": ["speed", "gear", "rpm"]}


def test_limits_are_configurable(spark: SparkSession) -> None:
    alerts = fired(spark, DetectSettings(speed_limit=150, rpm_limit=7000))
    assert alerts["speed+gear"] == ["speed", "gear"]
    assert "speed" not in alerts
    assert "rpm" not in alerts


def test_alert_record_is_enriched_event_plus_rules(spark: SparkSession) -> None:
    event = EVENTS["speed+gear"]
    messages = kafka_records(spark, [EVENTS["none"], event], topic="samples-enriched")
    (record,) = detect.kafka_records(messages, DetectSettings(), Topics()).collect()
    assert record["topic"] == "alert-data"
    assert bytes(record["key"]) == str(event["car_id"]).encode()
    value = json.loads(bytes(record["value"]))
    assert list(value) == list(schemas.ALERT.names)
    assert value == {**event, "rules": ["speed", "gear"]}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("]", "malformed JSON"),
        (
            {k: v for k, v in enriched_event().items() if k != "expected_gear"},
            "missing field: expected_gear",
        ),
        (
            enriched_event(driver_id="d-1"),
            "wrong type: driver_id must be an integer, got the string 'd-1'",
        ),
        (enriched_event(rpm=9000), "out of range: rpm = 9000, must be within 0..8000"),
    ],
    ids=["malformed JSON", "missing field", "wrong type", "out of range"],
)
def test_bad_enriched_event_goes_to_dead_letters(
    spark: SparkSession, message: Message, reason: str
) -> None:
    messages = kafka_records(spark, [message], topic="samples-enriched")
    (dead,) = detect.kafka_records(messages, DetectSettings(), Topics()).collect()
    assert dead["topic"] == "sensors-dlq"
    assert dead["value"] == messages.collect()[0]["value"]
    assert headers(dead)["carstream.dlq.stage"] == "detect"
    assert headers(dead)["carstream.dlq.reason"] == reason
    assert headers(dead)["carstream.dlq.topic"] == "samples-enriched"
