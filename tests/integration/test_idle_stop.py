"""A processingTime stage with --idle-stop-seconds: it stops by itself once its input is
quiet (exit 0, checkpoint intact, its consumer group at its last offsets) and, started again,
goes on from its checkpoint: nothing lost, nothing written twice."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession

from carstream.config import DimsSettings, GeneratorSettings, KafkaSettings, StorageSettings, Topics
from carstream.stages import dims, generate
from carstream_operator.backlog import BacklogReader, StageInput, client_config
from carstream_operator.model import KafkaConnection
from tests.fixtures.kafka import consume, json_values
from tests.integration.processes import kill_group, start_carstream
from tests.integration.test_recovery import enrich_args

IDLE_SECONDS = 10
FIRST, SECOND = 400, 250


def backlog(kafka: KafkaSettings, topics: Topics) -> int:
    """What the operator would see: the records enrich's consumer group has not processed."""
    connection = KafkaConnection(bootstrap_servers=kafka.bootstrap_servers)
    reader = BacklogReader(client_config(connection, None, None))
    stage = StageInput(topics.sensors, ("carstream.enrich",))
    return reader.read(stage, {}, datetime.now(UTC)).records


def run_until_idle(args: list[str], log: Path) -> float:
    """Runs `carstream ARGS` until it exits by itself; returns how long it ran."""
    started = time.monotonic()
    process = start_carstream(args, log)
    try:
        code = process.wait(timeout=240)
    finally:
        kill_group(process)
    text = log.read_text(errors="replace")
    assert code == 0, f"exit {code}; end of {log}:\n{text[-3000:]}"
    assert f"no input rows for {IDLE_SECONDS:g}s: stopping" in text
    return time.monotonic() - started


def test_an_idle_stage_stops_and_resumes_from_its_checkpoint(
    spark: SparkSession, kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse"
    storage = StorageSettings(warehouse=str(warehouse))
    dims.run(spark, DimsSettings(num_cars=10, seed=5), storage)
    car_ids = generate.read_car_ids(storage)
    generate.run(kafka, topics, GeneratorSettings(rate=2000, max_events=FIRST, seed=5), car_ids)
    args = enrich_args(
        kafka,
        topics,
        str(warehouse),
        str(tmp_path / "checkpoint"),
        "--idle-stop-seconds",
        str(IDLE_SECONDS),
    )

    first = run_until_idle(args, tmp_path / "first.log")
    assert first >= IDLE_SECONDS
    assert len(consume(kafka, topics.enriched)) == FIRST
    assert backlog(kafka, topics) == 0, "the stage's group has its last offsets at exit"

    generate.run(kafka, topics, GeneratorSettings(rate=2000, max_events=SECOND, seed=6), car_ids)
    run_until_idle(args, tmp_path / "second.log")
    assert backlog(kafka, topics) == 0

    sent = Counter(event["event_id"] for event in json_values(consume(kafka, topics.sensors)))
    written = Counter(event["event_id"] for event in json_values(consume(kafka, topics.enriched)))
    assert len(sent) == FIRST + SECOND
    assert written == sent, "every event enriched exactly once across the two runs"
