"""Checkpoints and warehouse on the S3 server (versitygw, through s3a) versus on local disk,
side by side in one run: one broker, one Spark session, the same events.

    python bench/storage_compare.py [--events 200000] [--latency-rate 1000]

For each place:
- drain: enrich then detect draining --events events (availableNow): events/s, and the
  milliseconds each micro-batch spent writing its checkpoint (Spark's durationMs: walCommit =
  the offset log before the batch, commitOffsets = the commit log after it);
- latency: enrich and detect side by side, back-to-back micro-batches (processingTime 0),
  while the generator offers --latency-rate events/s: event_time -> alert p50/p99, and the
  checkpoint write time of every micro-batch (p50/p99 per phase).

Writes bench/results/storage.json. Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import latency
import stage_throughput
from common import write_result
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery
from run_all import PARTITIONS, SPARK_CONF, SPARK_MASTER, _create, _topics

from carstream import spark_io
from carstream.broker import EmbeddedBroker
from carstream.config import (
    DetectSettings,
    DimsSettings,
    GeneratorSettings,
    KafkaSettings,
    S3Settings,
    StorageSettings,
    StreamSettings,
)
from carstream.s3_server import S3Server
from carstream.stages import detect, dims, enrich, generate
from carstream.stages.streaming import StreamJob
from carstream.storage import s3_client

BUCKET = "bench"
SEED = 11
CHECKPOINT_PHASES = ("walCommit", "commitOffsets")


def _percentiles(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "batches": len(ordered),
        "p50": latency.percentile(ordered, 0.50),
        "p99": latency.percentile(ordered, 0.99),
        "max": ordered[-1],
    }


def _checkpoint_writes(queries: list[StreamingQuery]) -> dict[str, dict[str, float]]:
    """Per phase, the milliseconds of each micro-batch of `queries` (that held rows)."""
    batches = [batch for query in queries for batch in query.recentProgress]
    return {
        phase: _percentiles(
            [int(batch.durationMs.get(phase, 0)) for batch in batches if batch.numInputRows]
        )
        for phase in CHECKPOINT_PHASES
    }


def _measure(
    where: str, root: str, spark: SparkSession, kafka: KafkaSettings, s3: S3Settings, args: Any
) -> dict[str, Any]:
    storage = StorageSettings(warehouse=f"{root}/warehouse", s3=s3)
    dims.run(spark, DimsSettings(num_cars=20, seed=SEED), storage)
    car_ids = generate.read_car_ids(storage)

    def job(topics: Any, name: str, **stream: Any) -> StreamJob:
        settings = StreamSettings(checkpoint_location=f"{root}/checkpoints/{name}", **stream)
        return StreamJob(kafka=kafka, topics=topics, stream=settings, s3=s3)

    filled = _create(kafka, _topics(f"{where}-filled"))
    print(f"{where}: filling {filled.sensors} with {args.events:,} events", flush=True)
    generate.run(
        kafka, filled, GeneratorSettings(rate=1e9, max_events=args.events, seed=SEED), car_ids
    )
    drained = {}
    for name, start in (
        (
            "enrich",
            lambda: enrich.start(spark, job(filled, "enrich", trigger="availableNow"), storage),
        ),
        (
            "detect",
            lambda: detect.start(
                spark, job(filled, "detect", trigger="availableNow"), DetectSettings()
            ),
        ),
    ):
        print(f"{where}: {name} draining", flush=True)
        drained[name] = stage_throughput.drain(start, name)
    seconds = drained["enrich"]["seconds"] + drained["detect"]["seconds"]

    live = _create(kafka, _topics(f"{where}-live"))
    started: list[StreamingQuery] = []

    def start_stages() -> list[StreamingQuery]:
        stream = {"trigger": "processingTime", "trigger_interval": "0 seconds"}
        started.extend(
            [
                *enrich.start(spark, job(live, "live-enrich", **stream), storage),
                *detect.start(spark, job(live, "live-detect", **stream), DetectSettings()),
            ]
        )
        return started

    print(f"{where}: latency at {args.latency_rate:g} events/s", flush=True)
    live_result = latency.measure(
        kafka,
        live,
        car_ids,
        start_stages,
        rate=args.latency_rate,
        seconds=args.latency_seconds,
        warm_up=args.latency_warm_up,
    )
    result = {
        "checkpoints": f"{root}/checkpoints",
        "enrich_detect_events_per_second": round(args.events / seconds),
        "enrich_events_per_second": drained["enrich"]["events_per_second"],
        "detect_events_per_second": drained["detect"]["events_per_second"],
        "drain_batch_phases_ms": {
            name: {
                phase: drained[name]["batch_phases_ms"].get(phase) for phase in CHECKPOINT_PHASES
            }
            for name in drained
        },
        "drain_micro_batches": {name: drained[name]["micro_batches"] for name in drained},
        "latency_ms": live_result["latency_ms"],
        "latency_alerts_measured": live_result["alerts_measured"],
        "latency_checkpoint_write_ms": _checkpoint_writes(started),
    }
    print(f"{where}: {result}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="default: 200000")
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="default: 1000")
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="default: 60")
    parser.add_argument("--latency-warm-up", type=float, default=15.0, help="default: 15")
    parser.add_argument(
        "--warm-up-events", type=int, default=50_000, help="unrecorded first round (50000)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="carstream-bench-storage-"))
    results: dict[str, Any] = {}
    try:
        with (
            EmbeddedBroker(work / "kafka", heap="1g") as broker,
            S3Server(work / "s3") as server,
        ):
            # Before Spark starts: its JVM takes the AWS environment chain at launch.
            os.environ.update(server.credentials())
            os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
            s3 = server.settings
            s3_client(s3).create_bucket(Bucket=BUCKET)
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            spark = spark_io.spark_session(
                "carstream-bench-storage",
                master=SPARK_MASTER,
                shuffle_partitions=PARTITIONS,
                s3=s3,
                extra_conf=SPARK_CONF,
            )
            try:
                # Not recorded: the JVM's JIT warms up on a first round, which would otherwise
                # favour whichever place is measured second.
                warm = argparse.Namespace(**{**vars(args), "events": args.warm_up_events})
                warm.latency_seconds, warm.latency_warm_up = 10.0, 5.0
                _measure("warm-up", str(work / "warm-up"), spark, kafka, s3, warm)
                for where, root in (("local", str(work / "local")), ("s3", f"s3a://{BUCKET}")):
                    results[where] = _measure(where, root, spark, kafka, s3, args)
            finally:
                spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "how": "one broker, one local Spark session (local[4]), versitygw v1.8.0 (posix backend "
        "on this machine's disk) for s3; the same settings and events for both places, after "
        "an unrecorded warm-up round on local disk",
        "events": args.events,
        "latency_offered_events_per_second": args.latency_rate,
        "latency_trigger": "processingTime 0 seconds",
        **results,
    }
    print(f"wrote {write_result('storage', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
