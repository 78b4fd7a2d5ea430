"""The pipeline with its warehouse and checkpoints in a bucket of the real S3 server: dims
written and read back through s3a, the generator reading the cars through boto3, a streaming
stage killed with SIGKILL resuming from its S3 checkpoint, and one stage started over by
deleting its checkpoint."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession

from carstream import spark_io
from carstream.config import (
    CountSettings,
    DetectSettings,
    DimsSettings,
    GeneratorSettings,
    KafkaSettings,
    S3Settings,
    StorageSettings,
    StreamSettings,
    Topics,
)
from carstream.stages import count, detect, dims, enrich, generate
from carstream.stages.streaming import StreamJob, await_queries
from carstream.storage import committed_offsets
from tests.fixtures.kafka import consume, end_offsets, json_values
from tests.fixtures.s3 import stored_keys, stored_parquet
from tests.integration.expected import expected_outputs, read_profiles
from tests.integration.processes import run_carstream
from tests.integration.test_recovery import enrich_args, kill_after_first_batches

EVENTS = 6000


def _storage(spark: SparkSession, s3: S3Settings, bucket: str) -> StorageSettings:
    spark_io.configure_s3a(spark, s3)
    return StorageSettings(warehouse=f"s3a://{bucket}/warehouse", s3=s3)


def _job(kafka: KafkaSettings, topics: Topics, s3: S3Settings, checkpoint: str) -> StreamJob:
    stream = StreamSettings(checkpoint_location=checkpoint, trigger="availableNow")
    return StreamJob(kafka=kafka, topics=topics, stream=stream, s3=s3)


def _dims_and_events(
    spark: SparkSession,
    kafka: KafkaSettings,
    topics: Topics,
    storage: StorageSettings,
    seed: int,
    events: int,
) -> None:
    """20 cars in the warehouse and `events` sensor events of them in the sensors topic."""
    dims.run(spark, DimsSettings(num_cars=20, seed=seed), storage)
    settings = GeneratorSettings(rate=2000, max_events=events, seed=seed)
    generate.run(kafka, topics, settings, generate.read_car_ids(storage))


def _tables(s3: S3Settings, bucket: str) -> Callable[[str], pa.Table]:
    return lambda table: stored_parquet(s3, bucket, f"warehouse/dims/{table}")


def test_dims_go_to_the_bucket_and_the_generator_reads_the_cars_through_boto3(
    spark: SparkSession,
    kafka: KafkaSettings,
    topics: Topics,
    s3: S3Settings,
    bucket: str,
) -> None:
    storage = _storage(spark, s3, bucket)
    written = dims.run(spark, DimsSettings(num_cars=12, seed=9), storage)
    assert written["cars"] == 12

    keys = stored_keys(s3, bucket, "warehouse/dims/")
    for table in ("cars", "car_models", "car_colors"):
        assert any(key.startswith(f"warehouse/dims/{table}/part-") for key in keys), keys
    # Spark reads back through s3a what boto3 sees in the bucket.
    cars = stored_parquet(s3, bucket, "warehouse/dims/cars").to_pylist()
    read_back = spark.read.parquet(storage.dim_path("cars")).collect()
    assert [row.asDict() for row in read_back] == cars  # one part file: its row order
    car_ids = [car["car_id"] for car in cars]

    assert generate.read_car_ids(storage) == car_ids
    result = run_carstream(
        [
            "stage",
            "generate",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topic-sensors",
            topics.sensors,
            "--warehouse",
            storage.warehouse,
            "--s3-endpoint",
            s3.endpoint or "",
            "--rate",
            "600",
            "--max-events",
            "240",
        ]
    )
    assert result.returncode == 0, result.stderr
    events = json_values(consume(kafka, topics.sensors))
    assert len(events) == 240
    assert {event["car_id"] for event in events} == set(car_ids)


def test_a_stage_killed_mid_stream_resumes_from_its_s3_checkpoint_without_loss(
    spark: SparkSession,
    kafka: KafkaSettings,
    topics: Topics,
    s3: S3Settings,
    bucket: str,
    tmp_path: Path,
) -> None:
    storage = _storage(spark, s3, bucket)
    _dims_and_events(spark, kafka, topics, storage, seed=3, events=EVENTS)
    checkpoint = f"s3a://{bucket}/checkpoints/enrich"

    args = enrich_args(
        kafka, topics, storage.warehouse, checkpoint, "--s3-endpoint", s3.endpoint or ""
    )
    kill_after_first_batches(args, kafka, topics, tmp_path / "enrich.out")
    assert end_offsets(kafka, [topics.enriched])[topics.enriched] < EVENTS, "killed mid-stream"
    assert any("checkpoints/enrich/commits/" in key for key in stored_keys(s3, bucket))

    enrich.run(spark, _job(kafka, topics, s3, checkpoint), storage)

    expected = expected_outputs(
        [m.value() or b"" for m in consume(kafka, topics.sensors)],
        read_profiles(_tables(s3, bucket)),
    )
    enriched = json_values(consume(kafka, topics.enriched))
    assert {e["event_id"]: e for e in enriched} == expected.enriched, "no event lost"
    assert len(expected.enriched) == EVENTS


def test_deleting_one_stages_checkpoint_starts_that_stage_over_and_no_other(
    spark: SparkSession,
    kafka: KafkaSettings,
    topics: Topics,
    s3: S3Settings,
    bucket: str,
) -> None:
    storage = _storage(spark, s3, bucket)
    _dims_and_events(spark, kafka, topics, storage, seed=4, events=1000)
    root = f"s3a://{bucket}/checkpoints"
    enrich_job = _job(kafka, topics, s3, f"{root}/enrich")
    detect_job = _job(kafka, topics, s3, f"{root}/detect")

    def run_both() -> None:
        enrich.run(spark, enrich_job, storage)
        detect.run(spark, detect_job, DetectSettings())

    run_both()
    first = end_offsets(kafka, [topics.enriched, topics.alerts])
    assert first[topics.enriched] == 1000
    assert first[topics.alerts] > 0
    enrich_keys = sorted(stored_keys(s3, bucket, "checkpoints/enrich/"))
    committed = committed_offsets(f"{root}/enrich", s3)
    assert sum(committed[topics.sensors].values()) == 1000

    result = run_carstream(
        [
            "storage",
            "reset",
            "detect",
            "--checkpoint-root",
            root,
            "--s3-endpoint",
            s3.endpoint or "",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert stored_keys(s3, bucket, "checkpoints/detect/") == []

    run_both()
    second = end_offsets(kafka, [topics.enriched, topics.alerts])
    assert second[topics.enriched] == first[topics.enriched], "enrich kept its position"
    assert second[topics.alerts] == 2 * first[topics.alerts], "detect read its input again"
    assert sorted(stored_keys(s3, bucket, "checkpoints/enrich/")) == enrich_keys
    times_written = Counter(a["event_id"] for a in json_values(consume(kafka, topics.alerts)))
    assert set(times_written.values()) == {2}, "each alert once per run of detect"


def test_the_counter_keeps_its_state_in_the_bucket(
    spark: SparkSession,
    kafka: KafkaSettings,
    topics: Topics,
    s3: S3Settings,
    bucket: str,
) -> None:
    """The stateful stage (windows and event_id deduplication) with its state store on S3."""
    storage = _storage(spark, s3, bucket)
    _dims_and_events(spark, kafka, topics, storage, seed=5, events=600)
    root = f"s3a://{bucket}/checkpoints"
    enrich.run(spark, _job(kafka, topics, s3, f"{root}/enrich"), storage)
    detect.run(spark, _job(kafka, topics, s3, f"{root}/detect"), DetectSettings())
    counting = CountSettings(window="10 seconds", slide="5 seconds", watermark="1 minute")
    await_queries(
        count.start(spark, _job(kafka, topics, s3, f"{root}/count"), counting, io.StringIO())
    )

    assert end_offsets(kafka, [topics.counts])[topics.counts] > 0
    keys = stored_keys(s3, bucket, "checkpoints/count/")
    assert any("/state/" in key and key.endswith(".delta") for key in keys), keys
