"""Measures carstream on this machine and records the results (`make bench` runs this).

    python bench/run_all.py [--events 1000000] [--only generator enrich_detect counter latency]

One embedded Kafka broker and one local Spark session serve every benchmark:

- generator: the most events/s the generator gets into the broker; it pre-fills
  sensors-sample with --events events for the next two;
- enrich_detect: the fused enrich-detect stage draining the events (Kafka -> Kafka, both
  outputs), then for comparison enrich and detect one after the other (availableNow);
- counter: the alert counter draining the alerts detect wrote (availableNow);
- latency: p50/p99 from event_time to the alert's Kafka timestamp while the generator offers
  --latency-rate events/s to enrich and detect running side by side, once with the realTime
  trigger and once with back-to-back micro-batches (processingTime 0 seconds).

Each writes bench/results/<name>.json (figures, machine, command, where the time went); a
table of every recorded result goes to stdout and bench/results/summary.md. Nothing here is a test:
figures depend on the machine and on what else runs on it (each result records the load
average).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import generator_throughput
import latency
import stage_throughput
from common import PARTITIONS, RESULTS_DIR, bench_topics, create_topics, write_result
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from carstream import spark_io
from carstream.broker import EmbeddedBroker
from carstream.config import (
    CountSettings,
    DetectSettings,
    DimsSettings,
    KafkaSettings,
    StorageSettings,
    StreamSettings,
    Topics,
)
from carstream.stages import count, detect, dims, enrich, enrich_detect, generate
from carstream.stages.streaming import StreamJob

BENCHMARKS = ("generator", "enrich_detect", "counter", "latency")
NEEDS = {"enrich_detect": ("generator",), "counter": ("generator", "enrich_detect")}
TARGETS = {
    "generator": (">=", 100_000),
    "enrich_detect": (">=", 100_000),
    "latency": ("<=", 2_000),
}
SEED = 7
# Real-time mode runs every task of a query for the whole checkpoint interval: enrich and
# detect side by side need 4 task slots (2 partitions each), so 4 threads on the 2 cores.
SPARK_MASTER = "local[4]"
SPARK_CONF = {"spark.driver.memory": "2g"}
LATENCY_TRIGGERS = (("realTime", "5 seconds"), ("processingTime", "0 seconds"))


@dataclass
class Bench:
    args: argparse.Namespace
    kafka: KafkaSettings
    spark: SparkSession
    storage: StorageSettings
    car_ids: list[int]
    checkpoints: Path
    filled: Topics
    """Topics drained by the throughput benchmarks."""

    def job(self, topics: Topics, name: str, **stream: Any) -> StreamJob:
        settings = StreamSettings(checkpoint_location=str(self.checkpoints / name), **stream)
        return StreamJob(kafka=self.kafka, topics=topics, stream=settings)


def _topics(label: str) -> Topics:
    return bench_topics(f"bench-{label}")


def _announce(label: str, result: dict[str, Any]) -> dict[str, Any]:
    hidden = ("profile_top_functions", "batch_phases_ms", "compared_triggers")
    shown = {key: value for key, value in result.items() if key not in hidden}
    print(f"{label}: {json.dumps(shown)}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# The benchmarks


def bench_generator(bench: Bench) -> dict[str, Any]:
    side_topics = create_topics(bench.kafka, _topics("profile"))
    # The first idempotent producer of a new broker waits for its transaction coordinator.
    generator_throughput.warm_up(bench.kafka, side_topics, bench.car_ids)
    profile = generator_throughput.profile(bench.kafka, side_topics, bench.car_ids)
    print(f"generator: sending {bench.args.events:,} events as fast as it can", flush=True)
    result = generator_throughput.measure(
        bench.kafka, bench.filled, bench.car_ids, bench.args.events, SEED
    )
    result["profile_top_functions"] = profile
    return _announce("generator", result)


def _drain(label: str, start: Callable[[], list[StreamingQuery]], source: str) -> dict[str, Any]:
    print(f"{label}: draining {source}", flush=True)
    return _announce(label, stage_throughput.drain(start, source))


def bench_enrich_detect(bench: Bench) -> dict[str, Any]:
    """The fused stage first (the figure; it starts on the JVM that only ran the generator's
    dimension reads), then, for comparison, enrich followed by detect on the same events,
    writing to topics of their own."""
    spark, topics = bench.spark, bench.filled
    fused_job = bench.job(topics, "enrich-detect", trigger="availableNow")
    fused = _drain(
        "enrich-detect",
        lambda: enrich_detect.start(spark, fused_job, bench.storage, DetectSettings()),
        topics.sensors,
    )
    side = dataclasses.replace(
        create_topics(bench.kafka, _topics("separate")), sensors=topics.sensors
    )
    enrich_job = bench.job(side, "enrich", trigger="availableNow")
    detect_job = bench.job(side, "detect", trigger="availableNow")
    enriched = _drain(
        "enrich", lambda: enrich.start(spark, enrich_job, bench.storage), side.sensors
    )
    detected = _drain(
        "detect", lambda: detect.start(spark, detect_job, DetectSettings()), side.enriched
    )
    events = fused["rows"]
    separate_seconds = enriched["seconds"] + detected["seconds"]
    return {
        "events": events,
        "seconds": fused["seconds"],
        "events_per_second": fused["events_per_second"],
        "how": "the fused enrich-detect query drains sensors-sample (availableNow) writing "
        "samples-enriched and alert-data; events/s = events / its seconds, query start-up "
        "included. Then enrich drains the same sensors-sample and detect what enrich wrote, "
        "each availableNow: separate events/s = events / (enrich seconds + detect seconds)",
        "fused": fused,
        "separate": {
            "seconds": round(separate_seconds, 2),
            "events_per_second": round(events / separate_seconds),
            "enrich": enriched,
            "detect": detected,
        },
    }


def bench_counter(bench: Bench) -> dict[str, Any]:
    console = io.StringIO()
    job = bench.job(bench.filled, "count", trigger="availableNow")
    result = _drain(
        "counter",
        lambda: count.start(bench.spark, job, CountSettings(), console),
        bench.filled.alerts,
    )
    result["settings"] = "default: 15-minute windows every minute, 2-minute watermark"
    return result


def bench_latency(bench: Bench) -> dict[str, Any]:
    args = bench.args
    runs = []
    for trigger, interval in LATENCY_TRIGGERS:
        topics = create_topics(bench.kafka, _topics(f"live-{trigger}"))
        stream = {"trigger": trigger, "trigger_interval": interval}
        enrich_job = bench.job(topics, f"live-{trigger}-enrich", **stream)
        detect_job = bench.job(topics, f"live-{trigger}-detect", **stream)

        def start_stages(
            enrich_job: StreamJob = enrich_job, detect_job: StreamJob = detect_job
        ) -> list[StreamingQuery]:
            return [
                *enrich.start(bench.spark, enrich_job, bench.storage),
                *detect.start(bench.spark, detect_job, DetectSettings()),
            ]

        print(
            f"latency ({trigger} {interval}): {args.latency_rate:g} events/s for "
            f"{args.latency_warm_up + args.latency_seconds:g} s",
            flush=True,
        )
        result = latency.measure(
            bench.kafka,
            topics,
            bench.car_ids,
            start_stages,
            rate=args.latency_rate,
            seconds=args.latency_seconds,
            warm_up=args.latency_warm_up,
        )
        result["trigger"] = f"{trigger} {interval}"
        runs.append(_announce(f"latency ({trigger})", result))
    best, *others = runs
    return {**best, "compared_triggers": others}


STEPS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "generator": bench_generator,
    "enrich_detect": bench_enrich_detect,
    "counter": bench_counter,
    "latency": bench_latency,
}


# ---------------------------------------------------------------------------------------------
# Summary


def _busiest(cores: dict[str, float]) -> str:
    return ", ".join(f"{label} {value:.2f}" for label, value in list(cores.items())[:3])


def _row(name: str, result: dict[str, Any]) -> tuple[str, str, str, str]:
    if name == "latency":
        figures = result["latency_ms"]
        figure: float = figures["p99"]
        text = (
            f"p50 {figures['p50']:,} ms, p99 {figure:,} ms at "
            f"{result['offered_events_per_second']:,.0f} ev/s ({result['trigger']})"
        )
        cores = result["cores_used"]
    elif name == "enrich_detect":
        figure = result["events_per_second"]
        separate = result["separate"]
        text = (
            f"{figure:,} ev/s fused (separate {separate['events_per_second']:,}: enrich "
            f"{separate['enrich']['events_per_second']:,}, detect "
            f"{separate['detect']['events_per_second']:,})"
        )
        cores = result["fused"]["cores_used"]
    else:
        figure = result["events_per_second"]
        text = f"{figure:,} ev/s over {result.get('events', result.get('rows')):,} events"
        cores = result["cores_used"]
    target = "none"
    if name in TARGETS:
        comparison, goal = TARGETS[name]
        met = figure >= goal if comparison == ">=" else figure <= goal
        target = f"{comparison} {goal:,}: {'met' if met else 'MISSED'}"
    return name, text, target, _busiest(cores)


def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = [("benchmark", "result", "target", "cores kept busy"), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]

    def render(line: tuple[str, ...]) -> str:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events pre-filled (default: 1000000)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        default=list(BENCHMARKS),
        metavar="NAME",
        help=f"run these ({', '.join(BENCHMARKS)}) and what they need",
    )
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="default: 1000")
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="default: 60")
    parser.add_argument("--latency-warm-up", type=float, default=15.0, help="default: 15")
    parser.add_argument("--work-dir", type=Path, help="keep broker data and checkpoints here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        print(f"--work-dir {args.work_dir} is not empty: give a new folder", file=sys.stderr)
        return 2
    selected = [name for name in BENCHMARKS if name in args.only]
    needed = {need for name in selected for need in NEEDS.get(name, ())}
    to_run = [name for name in BENCHMARKS if name in selected or name in needed]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="carstream-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        with EmbeddedBroker(work / "kafka", heap="1g") as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            spark = spark_io.spark_session(
                "carstream-bench",
                master=SPARK_MASTER,
                shuffle_partitions=PARTITIONS,
                extra_conf=SPARK_CONF,
            )
            try:
                storage = StorageSettings(warehouse=str(work / "warehouse"))
                dims.run(spark, DimsSettings(num_cars=20, seed=SEED), storage)
                bench = Bench(
                    args=args,
                    kafka=kafka,
                    spark=spark,
                    storage=storage,
                    car_ids=generate.read_car_ids(storage),
                    checkpoints=work / "checkpoints",
                    filled=create_topics(kafka, _topics("filled")),
                )
                for name in to_run:
                    results[name] = STEPS[name](bench)
            finally:
                spark.stop()
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    for name in selected:
        print(f"wrote {write_result(name, results[name])}")
    recorded = {
        name: json.loads((RESULTS_DIR / f"{name}.json").read_text())
        for name in BENCHMARKS
        if (RESULTS_DIR / f"{name}.json").exists()
    }
    summary = table([_row(name, result) for name, result in recorded.items()])
    print(summary)
    (RESULTS_DIR / "summary.md").write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
