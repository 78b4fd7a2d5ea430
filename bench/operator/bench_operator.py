"""Benchmark of the carstream operator on a local API server (etcd + kube-apiserver).

Two latencies, each over --pipelines five-stage Pipelines, with a stand-in for spark-operator
that answers at once (dims: COMPLETED, the others: RUNNING):

  created -> all applications   from creating a Pipeline until the SparkApplications of all
                                five stages exist (dims, then generate and enrich, then detect,
                                then count: four rounds of dependency ordering);
  failed -> replacement         from marking a running application FAILED until its
                                replacement exists (restart backoff set to 0: excluded).

Writes the figures to bench/operator/results.json and prints a table. Needs the toolchain
(build/bootstrap); run from the repository root:

    .venv/bin/python bench/operator/bench_operator.py [--pipelines 100] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from kubernetes import watch  # noqa: E402
from kubernetes.client import CustomObjectsApi  # noqa: E402

from carstream.config import non_negative_float_arg, positive_int_arg  # noqa: E402
from carstream_operator import resources as r  # noqa: E402
from tests.fixtures.kube import start_control_plane  # noqa: E402
from tests.operator.examples import pipeline, pipeline_spec  # noqa: E402
from tests.operator.harness import OperatorProcess, wait_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
STAGES = ("dims", "generate", "enrich", "detect", "count")
NAMESPACE = "bench"


@dataclass
class Observed:
    """When each SparkApplication was first seen, from a watch; answers like spark-operator."""

    custom: CustomObjectsApi
    added: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    answers: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))
    answer_failures: list[str] = field(default_factory=list)

    def watch(self) -> None:
        listing = self.custom.list_namespaced_custom_object(
            r.SPARK_GROUP, r.SPARK_VERSION, NAMESPACE, r.SPARK_PLURAL
        )
        version = listing["metadata"]["resourceVersion"]
        self.ready.set()
        while not self.stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                self.custom.list_namespaced_custom_object,
                r.SPARK_GROUP,
                r.SPARK_VERSION,
                NAMESPACE,
                r.SPARK_PLURAL,
                resource_version=version,
                timeout_seconds=1,
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                if event["type"] == "ADDED":
                    name = obj["metadata"]["name"]
                    with self.lock:
                        self.added.setdefault(name, time.monotonic())
                    job = obj["metadata"]["labels"][r.LABEL_JOB]
                    self.answers.submit(
                        self.answer, name, "COMPLETED" if job == "dims" else "RUNNING"
                    )

    def answer(self, name: str, state: str) -> None:
        try:
            self.set_state(name, state)
        except Exception as error:  # recorded and reported: the benchmark must not hide it
            self.answer_failures.append(f"{name}: {error}")

    def set_state(self, name: str, state: str) -> None:
        self.custom.patch_namespaced_custom_object_status(
            r.SPARK_GROUP,
            r.SPARK_VERSION,
            NAMESPACE,
            r.SPARK_PLURAL,
            name,
            {"status": {"applicationState": {"state": state}, "driverInfo": {}}},
        )

    def seen(self, name: str) -> float | None:
        with self.lock:
            return self.added.get(name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(fraction: float) -> float:
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
        return ordered[index]

    return {
        "count": len(ordered),
        "p50": round(at(0.50), 4),
        "p99": round(at(0.99), 4),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


def bench_spec() -> dict[str, Any]:
    spec = pipeline_spec()
    for stage in spec["stages"]:
        stage["restartPolicy"] = {
            "maxRestarts": 10,
            "initialBackoffSeconds": 0,
            "maxBackoffSeconds": 0,
        }
    return spec


def run(pipelines: int, interval: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="carstream-bench-"))
    plane = start_control_plane(workdir / "kube")
    operator = None
    observed = None
    failed = False
    try:
        plane.kubectl("create", "namespace", NAMESPACE)
        custom = CustomObjectsApi(plane.api_client())
        observed = Observed(custom)
        watcher = threading.Thread(target=observed.watch, daemon=True)
        watcher.start()
        observed.ready.wait(30)
        # The operator's default settings, as in production (no short test resync).
        operator = OperatorProcess(plane, NAMESPACE, workdir, verbose=False, settings={})
        operator.start()
        assert operator.process is not None
        processes = {
            "operator": operator.process.pid,
            "kube-apiserver": plane.pid("kube-apiserver"),
            "etcd": plane.pid("etcd"),
        }
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        names = [f"bench-{index:03d}" for index in range(pipelines)]

        # Phase 1: Pipelines created one every `interval` seconds.
        created_at: dict[str, float] = {}
        started = time.monotonic()
        for index, name in enumerate(names):
            pause = started + index * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            created_at[name] = time.monotonic()
            custom.create_namespaced_custom_object(
                r.GROUP, r.VERSION, NAMESPACE, r.PIPELINE_PLURAL, pipeline(name, bench_spec())
            )
        expected = [f"{name}-{stage}-1" for name in names for stage in STAGES]
        wait_for(
            lambda: all(observed.seen(app) for app in expected),
            "every application of every pipeline",
            timeout=120 + pipelines,
            interval=0.2,
        )
        up = [
            max(observed.seen(f"{name}-{stage}-1") or 0 for stage in STAGES) - created_at[name]
            for name in names
        ]

        # Phase 2: one running application per pipeline marked FAILED, one every `interval`.
        for name in names:
            wait_for(
                lambda name=name: stage_phase(custom, f"{name}-enrich") == "Running",
                f"{name}-enrich running",
                timeout=60,
            )
        failed_at: dict[str, float] = {}
        started = time.monotonic()
        for index, name in enumerate(names):
            pause = started + index * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            failed_at[name] = time.monotonic()
            observed.set_state(f"{name}-enrich-1", "FAILED")
        wait_for(
            lambda: all(observed.seen(f"{name}-enrich-2") for name in names),
            "every replacement",
            timeout=60 + pipelines,
            interval=0.2,
        )
        replaced = [(observed.seen(f"{name}-enrich-2") or 0) - failed_at[name] for name in names]

        # Every pipeline settled, every reconcile without error.
        wait_for(
            lambda: all(pipeline_phase(custom, name) == "Running" for name in names),
            "every pipeline Running",
            timeout=60,
            interval=0.5,
        )
        errors = sum(
            operator.metric("carstream_operator_reconciles_total", kind=kind, result="error") or 0.0
            for kind in ("pipeline", "stage")
        )
        running = sum(1 for name in names if pipeline_phase(custom, name) == "Running")
        cpu = {
            name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in processes.items()
        }
        reconciles = operator.metric(
            "carstream_operator_reconciles_total", kind="stage", result="ok"
        )
        log = operator.log()
        slowest = sorted(zip(up, names, strict=True), reverse=True)[:3]
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average_at_end": os.getloadavg(),
            "slowest_pipelines": [
                {"pipeline": name, "seconds": round(seconds, 3)} for seconds, name in slowest
            ],
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "pipelines": pipelines,
            "stages_per_pipeline": len(STAGES),
            "interval_seconds": interval,
            "created_to_all_applications_seconds": percentiles(up),
            "failed_to_replacement_seconds": percentiles(replaced),
            "pipelines_running": running,
            "cpu_seconds": cpu,
            "reconcile_errors": errors,
            "stage_reconciles": reconciles,
            "operator_log_errors": sum(
                1 for line in log.splitlines() if "[ERROR" in line or "Traceback" in line
            ),
            "stand_in_failures": len(observed.answer_failures),
        }
    except BaseException:
        print(f"the logs of etcd, kube-apiserver and the operator are in {workdir}")
        failed = True
        raise
    finally:
        if operator is not None:
            operator.stop()
        if observed is not None:
            observed.stop.set()
            observed.answers.shutdown(wait=False)
        plane.stop()
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)


def stage_phase(custom: CustomObjectsApi, name: str) -> str | None:
    obj = custom.get_namespaced_custom_object(r.GROUP, r.VERSION, NAMESPACE, r.STAGE_PLURAL, name)
    phase: str | None = (obj.get("status") or {}).get("phase")
    return phase


def pipeline_phase(custom: CustomObjectsApi, name: str) -> str | None:
    obj = custom.get_namespaced_custom_object(
        r.GROUP, r.VERSION, NAMESPACE, r.PIPELINE_PLURAL, name
    )
    phase: str | None = (obj.get("status") or {}).get("phase")
    return phase


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{results['pipelines']} pipelines x {results['stages_per_pipeline']} stages, one every "
        f"{results['interval_seconds']}s, {results['machine']['cores']} cores"
    )
    print(f"{'latency (s)':<34}{'p50':>8}{'p99':>8}{'max':>8}{'mean':>8}")
    for key, label in (
        ("created_to_all_applications_seconds", "Pipeline created -> all apps"),
        ("failed_to_replacement_seconds", "FAILED -> replacement app"),
    ):
        row = results[key]
        print(
            f"{label:<34}{row['p50']:>8.3f}{row['p99']:>8.3f}{row['max']:>8.3f}{row['mean']:>8.3f}"
        )
    print(
        f"reconcile errors: {results['reconcile_errors']:g}, error lines in the operator log: "
        f"{results['operator_log_errors']}, pipelines Running: {results['pipelines_running']}"
    )
    cpu = ", ".join(f"{name} {seconds:g}s" for name, seconds in results["cpu_seconds"].items())
    print(f"CPU used: {cpu}; load average at the end: {results['load_average_at_end'][0]:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_operator.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--pipelines", type=positive_int_arg, default=100, help="Pipelines to create (default 100)"
    )
    parser.add_argument(
        "--interval",
        type=non_negative_float_arg,
        default=1.0,
        help="seconds between two Pipelines, and between two failures (default 1.0)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    results = run(args.pipelines, args.interval)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"written to {args.output}")
    clean = (
        results["reconcile_errors"] == 0
        and results["operator_log_errors"] == 0
        and results["stand_in_failures"] == 0
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
