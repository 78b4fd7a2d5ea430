"""A seeded run through every stage on the real broker and Spark, checked against an
independent recomputation (tests/integration/expected.py) of what each topic must hold.

Garbage is mixed into every input topic; it must land in the dead-letter topic with its
original bytes, the stage and the reason, while the stages process everything after it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from carstream.config import (
    CountSettings,
    DetectSettings,
    DimsSettings,
    GeneratorSettings,
    KafkaSettings,
    StorageSettings,
    StreamSettings,
    Topics,
)
from carstream.stages import count, detect, dims, enrich, enrich_detect, generate
from carstream.stages.streaming import StreamJob, await_queries
from tests.fixtures.kafka import consume, header_map, json_values, produce
from tests.integration.expected import (
    expected_outputs,
    latest_per_key,
    read_profiles,
    window_counts,
)

WINDOW, SLIDE = 10, 5
COUNTING = CountSettings(window=f"{WINDOW} seconds", slide=f"{SLIDE} seconds", watermark="1 minute")

# Garbage on sensors-sample and the reason enrich must give for each.
SENSOR_GARBAGE: list[tuple[bytes, str]] = [
    (b"this is not json", "malformed JSON"),
    (b"", "malformed JSON"),
    (b"[1, 2, 3]", "malformed JSON"),
    (
        b'{"event_id":"g-1","event_time":"2026-01-01T00:00:00.000Z","car_id":%d,'
        b'"speed":10,"rpm":100}',
        "missing field: gear",
    ),
    (
        b'{"event_id":"g-2","event_time":"2026-01-01T00:00:00.000Z","car_id":%d,'
        b'"speed":"fast","rpm":100,"gear":1}',
        "wrong type: speed",
    ),
    (
        b'{"event_id":"g-3","event_time":"yesterday","car_id":%d,"speed":10,"rpm":100,"gear":1}',
        "wrong type: event_time",
    ),
    (
        b'{"event_id":"g-4","event_time":"2026-01-01T00:00:00.000Z","car_id":%d,'
        b'"speed":10,"rpm":9000,"gear":1}',
        "out of range: rpm = 9000",
    ),
    (
        b'{"event_id":"g-5","event_time":"2026-01-01T00:00:00.000Z","car_id":999,'
        b'"speed":10,"rpm":100,"gear":1}',
        "unknown car: 999",
    ),
]
ENRICHED_GARBAGE = (b'{"event_id": "g-6", "speed": 300', "malformed JSON")
ALERT_GARBAGE = (b'{"event_id": "g-7"}', "missing field: event_time")


def _job(kafka: KafkaSettings, topics: Topics, checkpoints: Path, stage: str) -> StreamJob:
    stream = StreamSettings(checkpoint_location=str(checkpoints / stage), trigger="availableNow")
    return StreamJob(kafka=kafka, topics=topics, stream=stream)


@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
def test_every_stage_computes_what_the_spec_says(
    spark: SparkSession, kafka: KafkaSettings, topics: Topics, tmp_path: Path, fused: bool
) -> None:
    warehouse, checkpoints = tmp_path / "warehouse", tmp_path / "checkpoints"
    storage = StorageSettings(warehouse=str(warehouse))
    dims.run(spark, DimsSettings(num_cars=20, seed=7), storage)
    car_ids = generate.read_car_ids(storage)
    known_car = car_ids[0]

    garbage = [
        (value.replace(b"%d", str(known_car).encode()), why) for value, why in SENSOR_GARBAGE
    ]
    produce(kafka, topics.sensors, [(b"garbage", value) for value, _ in garbage])
    report = generate.run(kafka, topics, GeneratorSettings(rate=500, time_limit=6, seed=7), car_ids)
    assert (report.sent, report.failed) == (3000, 0)
    produce(kafka, topics.enriched, [(b"garbage", ENRICHED_GARBAGE[0])])
    produce(kafka, topics.alerts, [(b"garbage", ALERT_GARBAGE[0])])

    if fused:
        job = _job(kafka, topics, checkpoints, enrich_detect.STAGE)
        enrich_detect.run(spark, job, storage, DetectSettings())
    else:
        enrich.run(spark, _job(kafka, topics, checkpoints, "enrich"), storage)
        detect.run(spark, _job(kafka, topics, checkpoints, "detect"), DetectSettings())
    console = io.StringIO()
    await_queries(count.start(spark, _job(kafka, topics, checkpoints, "count"), COUNTING, console))

    sensor_values = [m.value() or b"" for m in consume(kafka, topics.sensors)]
    expected = expected_outputs(sensor_values, read_profiles(warehouse))
    assert len(expected.enriched) == 3000
    assert len(expected.invalid) + len(expected.unknown_cars) == len(SENSOR_GARBAGE)
    assert 0 < len(expected.alerts) < 3000

    enriched_messages = [
        m for m in consume(kafka, topics.enriched) if m.value() != ENRICHED_GARBAGE[0]
    ]
    for message in enriched_messages:
        assert message.key() == str(json.loads(message.value() or b"")["car_id"]).encode()
    enriched = json_values(enriched_messages)
    assert len(enriched) == 3000, "each event enriched exactly once in an undisturbed run"
    assert {e["event_id"]: e for e in enriched} == expected.enriched
    assert all(list(e) == list(expected.enriched[e["event_id"]]) for e in enriched)

    alert_messages = [m for m in consume(kafka, topics.alerts) if m.value() != ALERT_GARBAGE[0]]
    alerts = json_values(alert_messages)
    assert len(alerts) == len(expected.alerts)
    assert {a["event_id"]: a for a in alerts} == expected.alerts
    assert all(list(a) == list(expected.alerts[a["event_id"]]) for a in alerts)

    windows = latest_per_key((m.key(), m.value()) for m in consume(kafka, topics.counts))
    assert windows == window_counts(expected.alerts.values(), WINDOW, SLIDE)
    assert len(windows) >= 3, "6 s of events span at least 3 windows of 10 s every 5 s"
    printed = console.getvalue()
    assert "alert counts, batch" in printed
    assert "num_of_silver" in printed

    dead_letters = {m.value() or b"": m for m in consume(kafka, topics.dlq)}
    cases = [
        *((value, why, "enrich", topics.sensors) for value, why in garbage),
        (*ALERT_GARBAGE, "count", topics.alerts),
    ]
    if fused:  # the fused stage does not read samples-enriched: what others write there stays
        assert ENRICHED_GARBAGE[0] not in dead_letters
    else:
        cases.append((*ENRICHED_GARBAGE, "detect", topics.enriched))
    assert len(dead_letters) == len(cases)
    for value, why, stage, source_topic in cases:
        assert value in dead_letters, f"{value!r} is not in the dead-letter topic"
        headers = header_map(dead_letters[value])
        assert headers["carstream.dlq.stage"] == stage
        assert headers["carstream.dlq.reason"].startswith(why), headers
        assert headers["carstream.dlq.topic"] == source_topic
        assert dead_letters[value].key() == b"garbage"
