"""enrich and detect fused: the records of one pass are those of enrich followed by detect."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession

from carstream.config import DetectSettings, Topics
from carstream.stages import detect, enrich, enrich_detect
from tests.unit.messages import (
    UNKNOWN_CAR,
    Message,
    car_profiles,
    headers,
    kafka_records,
    sensor_event,
)

TOPICS = Topics(dlq="dead")
# Every rule alone and together, no rule, every kind of dead letter, text that JSON escapes.
MESSAGES: list[Message] = [
    sensor_event(event_id="none", speed=45, gear=2, rpm=3000),
    sensor_event(event_id="speed", speed=125, gear=4, rpm=3000),
    sensor_event(event_id="gear", speed=45, gear=5, rpm=3000),
    sensor_event(event_id="rpm", speed=45, gear=2, rpm=7000),
    sensor_event(event_id="all", speed=200, gear=1, rpm=8000),
    sensor_event(event_id='quote " and é', speed=0, gear=1, rpm=0),
    sensor_event(event_id="late zone", event_time="2024-05-01T14:07:30+02:00", speed=130),
    sensor_event(event_id="unknown", car_id=UNKNOWN_CAR, speed=150),
    "{not json",
    b"\xff\xfe",
    None,
    {"event_id": "e-1"},
    sensor_event(event_id="wrong type", speed="fast"),
    sensor_event(event_id="out of range", rpm=9000),
]


@pytest.fixture(scope="module")
def profiles(spark: SparkSession) -> DataFrame:
    return car_profiles(spark)


def _record(row: Row) -> tuple[Any, ...]:
    header_list = tuple(sorted(headers(row).items()))
    return (row["topic"], bytes(row["key"] or b""), bytes(row["value"] or b""), header_list)


def separate(spark: SparkSession, profiles: DataFrame, settings: DetectSettings) -> list[Row]:
    """enrich, then detect reading what enrich wrote to samples-enriched."""
    messages = kafka_records(spark, MESSAGES)
    enriched = enrich.kafka_records(messages, profiles, TOPICS).collect()
    written = [bytes(row["value"]) for row in enriched if row["topic"] == TOPICS.enriched]
    alerts = detect.kafka_records(
        kafka_records(spark, written, topic=TOPICS.enriched), settings, TOPICS
    ).collect()
    return enriched + alerts


def fused(spark: SparkSession, profiles: DataFrame, settings: DetectSettings) -> list[Row]:
    messages = kafka_records(spark, MESSAGES)
    return enrich_detect.kafka_records(messages, profiles, settings, TOPICS).collect()


@pytest.mark.parametrize(
    "settings",
    [
        DetectSettings(),
        DetectSettings(combinator="all"),
        DetectSettings(speed_limit=150, rpm_limit=7500),
    ],
    ids=["defaults", "all rules", "other limits"],
)
def test_one_pass_writes_what_enrich_then_detect_write(
    spark: SparkSession, profiles: DataFrame, settings: DetectSettings
) -> None:
    expected = Counter(_record(row) for row in separate(spark, profiles, settings))
    assert Counter(_record(row) for row in fused(spark, profiles, settings)) == expected
    topics = Counter(record[0] for record in expected.elements())
    assert topics[TOPICS.enriched] == 7
    assert topics[TOPICS.dlq] == 7
    assert topics[TOPICS.alerts] >= 1


def test_an_alert_follows_its_enriched_record_and_names_its_rules(
    spark: SparkSession, profiles: DataFrame
) -> None:
    records = [row for row in fused(spark, profiles, DetectSettings()) if row["key"] is not None]
    by_id: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for row in records:
        if row["topic"] != TOPICS.dlq:
            value = json.loads(bytes(row["value"]))
            by_id.setdefault(value["event_id"], []).append((row["topic"], value))
    assert [topic for topic, _ in by_id["all"]] == [TOPICS.enriched, TOPICS.alerts]
    (_, enriched), (_, alert) = by_id["all"]
    assert alert == {**enriched, "rules": ["speed", "gear", "rpm"]}
    assert [topic for topic, _ in by_id["none"]] == [TOPICS.enriched]


def test_dead_letters_are_enrichs(spark: SparkSession, profiles: DataFrame) -> None:
    dead = [row for row in fused(spark, profiles, DetectSettings()) if row["topic"] == "dead"]
    stages = {headers(row)["carstream.dlq.stage"] for row in dead}
    reasons = sorted(headers(row)["carstream.dlq.reason"].split(":")[0] for row in dead)
    assert stages == {"enrich"}
    assert reasons == [
        "malformed JSON",
        "malformed JSON",
        "malformed JSON",
        "missing field",
        "out of range",
        "unknown car",
        "wrong type",
    ]
