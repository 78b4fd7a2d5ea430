"""Delivery guarantees: a stage killed with SIGKILL mid-stream and started again from its
checkpoint loses no event, and the counter counts each event_id once even when alerts are
replayed into its input."""

from __future__ import annotations

import io
import json
from pathlib import Path

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
from tests.fixtures.kafka import consume, end_offsets, json_values, produce
from tests.integration.expected import (
    expected_outputs,
    latest_per_key,
    read_profiles,
    window_counts,
)
from tests.integration.processes import kill_group, start_carstream, wait_until

EVENTS = 6000
PER_BATCH = 300
WINDOW, SLIDE = 10, 5
COUNTING = CountSettings(window=f"{WINDOW} seconds", slide=f"{SLIDE} seconds", watermark="1 minute")


def _job(kafka: KafkaSettings, topics: Topics, checkpoint: Path) -> StreamJob:
    stream = StreamSettings(checkpoint_location=str(checkpoint), trigger="availableNow")
    return StreamJob(kafka=kafka, topics=topics, stream=stream)


def enrich_args(
    kafka: KafkaSettings,
    topics: Topics,
    warehouse: str,
    checkpoint: str,
    *more: str,
    stage: str = "enrich",
) -> list[str]:
    """`carstream stage enrich` (or `enrich-detect`) reading a few hundred events per
    micro-batch."""
    return [
        "stage",
        stage,
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--topic-sensors",
        topics.sensors,
        "--topic-enriched",
        topics.enriched,
        "--topic-dlq",
        topics.dlq,
        "--topic-alerts",
        topics.alerts,
        "--warehouse",
        warehouse,
        "--checkpoint-location",
        checkpoint,
        "--trigger-interval",
        "1 second",
        "--max-offsets-per-trigger",
        str(PER_BATCH),
        *more,
    ]


def kill_after_first_batches(
    args: list[str], kafka: KafkaSettings, topics: Topics, log: Path
) -> None:
    """Starts `carstream ARGS` (enrich) and SIGKILLs its process group once its first
    batches are in the enriched topic."""
    process = start_carstream(args, log)
    try:
        wait_until(
            lambda: end_offsets(kafka, [topics.enriched])[topics.enriched] >= PER_BATCH,
            120,
            f"enrich to write its first batches (log: {log})",
        )
    finally:
        kill_group(process)


def test_a_killed_stage_resumes_without_loss_and_alerts_count_once(
    spark: SparkSession, kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    warehouse, checkpoints = tmp_path / "warehouse", tmp_path / "checkpoints"
    storage = StorageSettings(warehouse=str(warehouse))
    dims.run(spark, DimsSettings(num_cars=20, seed=3), storage)
    car_ids = generate.read_car_ids(storage)
    generate.run(kafka, topics, GeneratorSettings(rate=1000, max_events=EVENTS, seed=3), car_ids)

    # enrich as its own process, a few hundred events per micro-batch; SIGKILL once its
    # first batches are in Kafka, long before it has read everything.
    args = enrich_args(kafka, topics, str(warehouse), str(checkpoints / "enrich"))
    kill_after_first_batches(args, kafka, topics, tmp_path / "enrich.out")
    written_before_kill = end_offsets(kafka, [topics.enriched])[topics.enriched]
    assert written_before_kill < EVENTS, "the kill should land mid-stream"

    # Started again from the same checkpoint, it drains the rest.
    enrich.run(spark, _job(kafka, topics, checkpoints / "enrich"), storage)

    expected = expected_outputs(
        [m.value() or b"" for m in consume(kafka, topics.sensors)], read_profiles(warehouse)
    )
    assert len(expected.enriched) == EVENTS
    enriched = json_values(consume(kafka, topics.enriched))
    assert {e["event_id"]: e for e in enriched} == expected.enriched, "no event lost"
    assert len(enriched) >= EVENTS  # at-least-once: a batch cut short may be written twice

    detect.run(spark, _job(kafka, topics, checkpoints / "detect"), DetectSettings())
    alert_messages = consume(kafka, topics.alerts)
    assert {a["event_id"] for a in json_values(alert_messages)} == set(expected.alerts)

    job = _job(kafka, topics, checkpoints / "count")
    await_queries(count.start(spark, job, COUNTING, io.StringIO()))
    windows = latest_per_key((m.key(), m.value()) for m in consume(kafka, topics.counts))
    assert windows == window_counts(expected.alerts.values(), WINDOW, SLIDE)

    # An upstream stage replays half of the alerts after a crash, and five new alerts arrive;
    # the counter, started again from its checkpoint, counts the new ones only.
    replayed = [(m.key(), m.value()) for m in alert_messages[::2]]
    fresh = [
        {**alert, "event_id": f"fresh-{number}"}
        for number, alert in enumerate(list(expected.alerts.values())[:5])
    ]
    produce(kafka, topics.alerts, [*replayed, *((b"fresh", json.dumps(a)) for a in fresh)])
    await_queries(count.start(spark, job, COUNTING, io.StringIO()))
    windows = latest_per_key((m.key(), m.value()) for m in consume(kafka, topics.counts))
    assert windows == window_counts([*expected.alerts.values(), *fresh], WINDOW, SLIDE)


def test_a_killed_fused_stage_resumes_without_loss_on_either_topic(
    spark: SparkSession, kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """enrich-detect killed mid-stream: started again from its checkpoint, it leaves every
    enriched event and every alert in Kafka, each at least once, and each dead letter."""
    warehouse, checkpoint = tmp_path / "warehouse", tmp_path / "checkpoints" / "enrich-detect"
    storage = StorageSettings(warehouse=str(warehouse))
    dims.run(spark, DimsSettings(num_cars=20, seed=5), storage)
    car_ids = generate.read_car_ids(storage)
    generate.run(kafka, topics, GeneratorSettings(rate=1000, max_events=EVENTS, seed=5), car_ids)
    produce(kafka, topics.sensors, [(b"garbage", b"not json"), (b"garbage", b"{}")])

    args = enrich_args(kafka, topics, str(warehouse), str(checkpoint), stage=enrich_detect.STAGE)
    kill_after_first_batches(args, kafka, topics, tmp_path / "enrich-detect.out")
    written = end_offsets(kafka, [topics.enriched, topics.alerts])
    assert 0 < written[topics.enriched] < EVENTS, "the kill should land mid-stream"
    assert written[topics.alerts] > 0, "alerts are written with their enriched events"

    job = _job(kafka, topics, checkpoint)
    enrich_detect.run(spark, job, storage, DetectSettings())

    expected = expected_outputs(
        [m.value() or b"" for m in consume(kafka, topics.sensors)], read_profiles(warehouse)
    )
    enriched = json_values(consume(kafka, topics.enriched))
    assert {e["event_id"]: e for e in enriched} == expected.enriched, "no enriched event lost"
    alerts = json_values(consume(kafka, topics.alerts))
    assert {a["event_id"]: a for a in alerts} == expected.alerts, "no alert lost"
    # At least once, and no more than the micro-batch the kill cut short written twice.
    assert EVENTS <= len(enriched) <= EVENTS + PER_BATCH
    assert len(expected.alerts) <= len(alerts) <= len(expected.alerts) + PER_BATCH
    dead_letters = [m.value() for m in consume(kafka, topics.dlq)]
    assert sorted(set(dead_letters)) == [b"not json", b"{}"]
