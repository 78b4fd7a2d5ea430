"""A/B of one change to the fused enrich-detect stage: each variant drains the same pre-filled
sensors-sample in a Spark JVM of its own (cold, as a stage's driver starts), rounds
alternating A, B, A, B so that a drift of the machine's load hits both alike.

    python bench/ab_enrich_detect.py --events 1000000 --rounds 2 \\
        --variant base \\
        --variant gc=spark.driver.extraJavaOptions=-XX:+UseParallelGC \\
        --variant nolz4=producer:kafka.compression.type=none

A variant is NAME[=SETTING[,SETTING...]]; a SETTING is a Spark configuration KEY=VALUE (JVM
flags in spark.driver.extraJavaOptions are added to carstream's own), or
`producer:KEY=VALUE` / `consumer:KEY=VALUE` for the options of Spark's Kafka sink / source
(spark_io.PRODUCER_OPTIONS / CONSUMER_OPTIONS). Changes to the code itself are compared by
running this on each commit. Prints one JSON line per drain and a summary per variant
(median events/s, query start-up included); writes nothing under bench/results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import stage_throughput
from common import bench_topics, create_topics, machine

from carstream import spark_io
from carstream.broker import EmbeddedBroker
from carstream.config import (
    DetectSettings,
    DimsSettings,
    GeneratorSettings,
    KafkaSettings,
    StorageSettings,
    StreamSettings,
    Topics,
)
from carstream.stages import dims, enrich_detect, generate
from carstream.stages.streaming import StreamJob

SEED = 7
JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition("=")
    conf: dict[str, str] = {}
    for setting in filter(None, settings.split(",")):
        key, equals, value = setting.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"{setting!r} is not KEY=VALUE")
        conf[key] = value
    return name, conf


def _topics(label: str) -> Topics:
    return bench_topics(f"ab-{label}")


def prepare(work: Path, kafka: KafkaSettings, events: int) -> Topics:
    """The dimensions under `work` and `events` generated events in a new sensors topic."""
    spark = spark_io.spark_session("carstream-ab-prepare", with_kafka=False)
    try:
        dims.run(spark, DimsSettings(num_cars=20, seed=SEED), StorageSettings(str(work)))
    finally:
        spark.stop()
    topics = create_topics(kafka, _topics("input"))
    cars = generate.read_car_ids(StorageSettings(str(work)))
    settings = GeneratorSettings(rate=1e9, max_events=events, seed=SEED)
    report = generate.run(kafka, topics, settings, cars)
    assert report.sent == events and report.failed == 0, report
    return topics


def drain(work: Path, kafka: KafkaSettings, sensors: str, conf: dict[str, str]) -> dict[str, Any]:
    """In this process (a child): the fused stage drains `sensors` in a new Spark JVM with
    `conf`, writing to topics of its own."""
    spark_conf = {k: v for k, v in conf.items() if ":" not in k}
    if JAVA_OPTIONS in spark_conf:
        carstream_options = f"-Dlog4j2.configurationFile={spark_io.LOG4J_CONFIG.as_uri()}"
        spark_conf[JAVA_OPTIONS] = f"{carstream_options} {spark_conf[JAVA_OPTIONS]}"
    for key, value in conf.items():
        kind, _, option = key.partition(":")
        if kind == "producer":
            spark_io.PRODUCER_OPTIONS = {**spark_io.PRODUCER_OPTIONS, option: value}
        elif kind == "consumer":
            spark_io.CONSUMER_OPTIONS = {**spark_io.CONSUMER_OPTIONS, option: value}
    label = uuid.uuid4().hex[:8]
    topics = create_topics(kafka, _topics(label))
    topics = Topics(sensors, topics.enriched, topics.alerts, topics.counts, topics.dlq)
    spark = spark_io.spark_session("carstream-ab", extra_conf=spark_conf)
    stream = StreamSettings(checkpoint_location=str(work / label), trigger="availableNow")
    job = StreamJob(kafka=kafka, topics=topics, stream=stream)
    storage = StorageSettings(str(work))
    try:
        return stage_throughput.drain(
            lambda: enrich_detect.start(spark, job, storage, DetectSettings()), sensors
        )
    finally:
        spark.stop()


def run_child(args: argparse.Namespace, kafka: KafkaSettings, sensors: str, variant: str) -> Any:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--work-dir",
        str(args.work_dir),
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--sensors",
        sensors,
        "--variant",
        variant,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant}: drain failed\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME[=K=V,...]")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap-servers", help=argparse.SUPPRESS)
    parser.add_argument("--sensors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.variant]
    if args.child:
        kafka = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
        print(json.dumps(drain(args.work_dir, kafka, args.sensors, variants[0][1])))
        return 0
    temporary = args.work_dir is None
    args.work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="carstream-ab-"))
    results: dict[str, list[int]] = {name: [] for name, _ in variants}
    try:
        with EmbeddedBroker(args.work_dir / "kafka", heap="1g") as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            sensors = prepare(args.work_dir, kafka, args.events).sensors
            for round_number in range(args.rounds):
                for name, text in zip(results, args.variant, strict=True):
                    result = run_child(args, kafka, sensors, text)
                    results[name].append(result["events_per_second"])
                    shown = {k: result[k] for k in ("rows", "seconds", "events_per_second")}
                    line = {"round": round_number, "variant": name, **shown}
                    print(json.dumps(line), flush=True)
    finally:
        if temporary:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    print(json.dumps({"machine": machine(), "events": args.events}))
    for name, rates in results.items():
        print(f"{name}: median {statistics.median(rates):,.0f} events/s ({rates})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
