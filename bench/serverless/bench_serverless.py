"""Benchmark of the three ways to run a streaming stage under a bursty load: always on
(processingTime), a cron schedule of availableNow runs, and wake on backlog (spec.wake). For
each: pod-seconds (driver and executors) per hour and event latency p50/p99.

An hour of bursts on the real cluster per policy does not fit in a test run, so the hours are
simulated (simulate.py): the operator's own decision function decides when runs start and
end, and a Spark stage's costs come from measurements:

  start           one availableNow `carstream stage detect` over an empty topic, launched as a
                  process on this machine, to its exit (JVM, Spark session, query, stop;
                  measured here, median of --starts runs), plus the real cluster's
                  "driver deleted -> replacement driver Running" p50 (operator, spark-operator,
                  pod start), read from bench/cluster/results.json;
  rate            enrich + detect draining in pods on the real cluster, events/s (the same
                  file);
  batch overhead  a micro-batch's fixed cost when always on: the local latency benchmark's
                  p50 with back-to-back micro-batches (bench/results/latency.json).

Run from the repository root after build/bootstrap test:

    .venv/bin/python bench/serverless/bench_serverless.py [--hours 6] [--starts 3]

Writes bench/serverless/results.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))
sys.path.insert(0, str(REPO_ROOT / "bench" / "serverless"))
sys.path.insert(0, str(REPO_ROOT))

from common import command_line, machine  # noqa: E402
from simulate import Costs, Load, always_on, with_runs  # noqa: E402

from carstream.broker import EmbeddedBroker  # noqa: E402
from carstream.config import KafkaSettings, positive_float_arg, positive_int_arg  # noqa: E402
from carstream.kafka_admin import TopicAdmin  # noqa: E402
from tests.operator.stage_simulation import stage_spec as test_stage_spec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
AVAILABLE_NOW = {"type": "availableNow"}
CLUSTER_RESULTS = REPO_ROOT / "bench" / "cluster" / "results.json"
LATENCY_RESULTS = REPO_ROOT / "bench" / "results" / "latency.json"
CRON = "*/15 * * * *"
WAKES = [
    {"minRecords": 1000, "maxDelaySeconds": 60, "checkSeconds": 10},
    {"minRecords": 5000, "maxDelaySeconds": 300, "checkSeconds": 10},
    {"minRecords": 10000, "maxDelaySeconds": 900, "checkSeconds": 10},
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--hours", type=positive_float_arg, default=6.0, help="simulated hours (default: 6)"
    )
    parser.add_argument(
        "--starts", type=positive_int_arg, default=3, help="measured stage starts (default: 3)"
    )
    return parser.parse_args(argv)


def measure_start(runs: int) -> list[float]:
    """Seconds from launching an availableNow `carstream stage detect` over an empty topic
    (its checkpoint made by a first, unrecorded run) to its exit."""
    with tempfile.TemporaryDirectory() as work, EmbeddedBroker(Path(work) / "broker") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        admin = TopicAdmin(kafka)
        admin.create_topics(["bench-enriched", "bench-alerts", "bench-dlq"], partitions=2)
        admin.close()
        command = [
            sys.executable, "-m", "carstream.cli", "stage", "detect",
            "--bootstrap-servers", kafka.bootstrap_servers,
            "--topic-enriched", "bench-enriched", "--topic-alerts", "bench-alerts",
            "--topic-dlq", "bench-dlq", "--trigger", "availableNow",
            "--checkpoint-location", str(Path(work) / "checkpoint"),
        ]  # fmt: skip
        seconds = []
        for attempt in range(runs + 1):
            started = time.monotonic()
            subprocess.run(command, check=True, capture_output=True, timeout=600)
            if attempt:  # the first run makes the checkpoint
                seconds.append(time.monotonic() - started)
    return seconds


def costs(start_seconds: list[float]) -> tuple[Costs, dict[str, Any]]:
    cluster = json.loads(CLUSTER_RESULTS.read_text())
    latency = json.loads(LATENCY_RESULTS.read_text())
    pod_start = cluster["driver_deleted_to_replacement_running_seconds"]["p50"]
    rate = cluster["drain_in_pods"]["events_per_second_enrich_and_detect"]
    back_to_back = next(
        run for run in latency["compared_triggers"] if run["trigger"].startswith("processingTime")
    )
    batch_overhead = back_to_back["latency_ms"]["p50"] / 1000
    process = statistics.median(start_seconds)
    model = Costs(
        start_seconds=pod_start + process,
        run_overhead_seconds=0.0,  # in the measured start: the process ran its query and ended
        batch_overhead_seconds=batch_overhead,
        rate=rate,
    )
    sources = {
        "start_seconds": round(model.start_seconds, 1),
        "start_parts": {
            "pods_running_after_creation_p50": pod_start,
            "stage_process_launch_to_exit_median": round(process, 1),
            "stage_process_all": [round(s, 1) for s in start_seconds],
        },
        "events_per_second": rate,
        "batch_overhead_seconds": batch_overhead,
        "pods_per_run": model.pods,
        "trigger_seconds_always_on": model.trigger_seconds,
        "from": {
            "pods": f"{CLUSTER_RESULTS.relative_to(REPO_ROOT)} ({cluster['measured_at']})",
            "rate": f"{CLUSTER_RESULTS.relative_to(REPO_ROOT)} drain_in_pods",
            "batch_overhead": (
                f"{LATENCY_RESULTS.relative_to(REPO_ROOT)} ({latency['measured_at']})"
            ),
            "process": "measured by this run",
        },
    }
    return model, sources


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    starts = measure_start(args.starts)
    model, sources = costs(starts)
    load = Load(hours=args.hours)
    outcomes = [always_on(load, model)]
    cron = with_runs(
        f"cron {CRON}", test_stage_spec(trigger=AVAILABLE_NOW, schedule=CRON), load, model
    )
    outcomes.append(cron)
    for wake in WAKES:
        label = "wake " + ", ".join(f"{key} {value}" for key, value in wake.items())
        outcomes.append(
            with_runs(label, test_stage_spec(trigger=AVAILABLE_NOW, wake=wake), load, model)
        )
    rows = [outcome.summary(load.hours) for outcome in outcomes]
    always, cron_row = rows[0], rows[1]
    for row in rows[2:]:
        row["pod_seconds_vs_cron"] = round(
            row["pod_seconds_per_hour"] / cron_row["pod_seconds_per_hour"], 2
        )
        row["p99_vs_always_on"] = round(
            row["latency_p99_seconds"] / always["latency_p99_seconds"], 1
        )
    document = {
        "benchmark": "serverless",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine(),
        "load": {
            "burst_events": load.burst_events,
            "every_seconds": load.period_seconds,
            "burst_seconds": load.burst_seconds,
            "simulated_hours": load.hours,
        },
        "costs": sources,
        "goal": "wake: pod-seconds within 10% of cron's, latency p99 within 2x always-on's",
        "policies": rows,
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    header = f"{'policy':62} {'pod-s/h':>8} {'runs/h':>7} {'p50 s':>7} {'p99 s':>7}"
    print(header)
    for row in rows:
        print(
            f"{row['policy']:62} {row['pod_seconds_per_hour']:8} {row['runs_per_hour']:7} "
            f"{row['latency_p50_seconds']:7} {row['latency_p99_seconds']:7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
