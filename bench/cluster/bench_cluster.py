"""Benchmark of carstream on a real cluster: the two-node cluster of `localcluster`, with the
images, chart and values `make e2e` uses (tests/e2e/stack.py). Three figures, recorded with
the machine and its load, never asserted:

  install -> first window      from `helm install` until the first record on alert-counts
                               (Kafka, the operator, dims, then four streaming stages start);
  driver deleted -> Running    enrich's driver pod deleted with --grace-period=0 --force,
                               --kills times, until the driver pod of its replacement
                               application is Running. enrich's restart backoff is set to
                               --backoff seconds (and its restart budget above --kills), so
                               what is measured is the operator noticing the failure,
                               spark-operator submitting, and the pod starting;
  drain in pods                --events events sent into sensors-sample at once from this
                               host while enrich, detect and count run in their pods; the
                               seconds until enrich's checkpoint has committed every offset of
                               sensors-sample, and detect's every offset of samples-enriched.

The local-mode counterpart of the drain is `python bench/run_all.py --only enrich_detect
--events N` on the same machine. Run as root, from the repository root, after
`build/bootstrap test spark-operator cluster`:

    .venv/bin/python bench/cluster/bench_cluster.py [--kills 10] [--events 200000]

Writes bench/cluster/results.json and prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))
sys.path.insert(0, str(REPO_ROOT))

from common import command_line, machine  # noqa: E402

from carstream.config import (  # noqa: E402
    GeneratorSettings,
    S3Settings,
    Topics,
    non_negative_float_arg,
    positive_int_arg,
)
from carstream.stages import generate  # noqa: E402
from carstream.storage import committed_offsets  # noqa: E402
from tests.e2e.harness import started_cluster  # noqa: E402
from tests.e2e.stack import (  # noqa: E402
    CARSTREAM_IMAGE,
    NAMESPACE,
    POLL_SECONDS,
    Stack,
    build_carstream_image,
    install,
    local_values,
    uninstall_quietly,
)
from tests.fixtures.waiting import wait_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
TOPICS = Topics()
STARTING = 900  # seconds a stage may take to start on 2 busy cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kills", type=positive_int_arg, default=10, help="default: 10")
    parser.add_argument(
        "--backoff",
        type=non_negative_float_arg,
        default=1.0,
        help="enrich's restart backoff in seconds during the kills (default: 1)",
    )
    parser.add_argument(
        "--events", type=positive_int_arg, default=200_000, help="events drained (default: 200000)"
    )
    return parser.parse_args(argv)


def bench_values(args: argparse.Namespace) -> dict[str, Any]:
    """Over values-local.yaml: enrich restarts after --backoff seconds, --kills + 2 times."""
    stages = copy.deepcopy(local_values()["carstream"]["pipeline"]["stages"])
    for stage in stages:
        if stage["name"] == "enrich":
            stage["restartPolicy"] = {
                "initialBackoffSeconds": args.backoff,
                "maxBackoffSeconds": args.backoff,
                "backoffFactor": 1,
                "maxRestarts": args.kills + 2,
            }
    return {"carstream": {"pipeline": {"stages": stages}}}


# -- what a checkpoint has committed -------------------------------------------------------


def committed(stack: Stack, s3: S3Settings, stage: str, topic: str) -> int:
    """How far into `topic` the query of `stage` has committed (its partitions' offsets,
    summed), read from its checkpoint in the chart's S3 server; 0 before its first batch."""
    offsets = committed_offsets(stack.checkpoint(stage), s3)
    return sum(offsets.get(topic, {}).values())


# -- the three figures ------------------------------------------------------------------------


def first_window(stack: Stack) -> float:
    """Seconds from `helm install` to the first record on alert-counts."""
    # The broker answers once the stages run (it starts before the operator starts them).
    stack.wait_stage("count", lambda s: s.get("phase") == "Running", 2 * STARTING, "Running")
    wait_for(
        lambda: stack.end_offset(TOPICS.counts) > 0,
        "a first window on alert-counts",
        2 * STARTING,
        interval=1,
    )
    return time.monotonic() - stack.installed_at


def _running_driver(stack: Stack, application: str) -> dict[str, Any] | None:
    pod = stack.driver_pod(application)
    return pod if pod and pod["status"].get("phase") == "Running" else None


def kill_enrich_driver(stack: Stack) -> float:
    """Deletes enrich's driver pod; seconds until the next application's driver runs."""
    before = stack.wait_stage("enrich", lambda s: s.get("phase") == "Running", STARTING, "Running")
    driver = wait_for(
        lambda: _running_driver(stack, before["application"]),
        f"the driver of {before['application']} to run",
        STARTING,
        POLL_SECONDS,
    )
    killed = time.monotonic()
    stack.kubectl(
        "delete", "pod", driver["metadata"]["name"], f"--namespace={NAMESPACE}",
        "--grace-period=0", "--force", "--wait=false",
    )  # fmt: skip

    def replacement() -> dict[str, Any] | None:
        application = stack.stage("enrich").get("application")
        if not application or application == before["application"]:
            return None
        return _running_driver(stack, application)

    wait_for(replacement, "enrich's replacement driver to run", STARTING, interval=0.5)
    return time.monotonic() - killed


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def drain(stack: Stack, events: int) -> dict[str, Any]:
    """Sends `events` at once while the stages run; how long enrich and detect take."""
    for name in ("enrich", "detect"):
        stack.wait_stage(name, lambda s: s.get("phase") == "Running", STARTING, "Running")
    admin = stack.kafka("carstream-kafka-admin")
    storage = stack.storage()
    cars = generate.read_car_ids(storage)
    started = time.monotonic()
    report = generate.run(admin, TOPICS, GeneratorSettings(rate=1e9, max_events=events), cars)
    sent = time.monotonic()
    # Every partition's committed offset is at most its end offset, so once the sums meet,
    # every partition is drained (generate's 20 events/s go on meanwhile: a few more).
    target = stack.end_offset(TOPICS.sensors)

    def drained(stage: str, topic: str, target: int) -> float:
        wait_for(
            lambda: committed(stack, storage.s3, stage, topic) >= target,
            f"{stage} to commit every offset of {topic}",
            3600,
            interval=0.5,
        )
        return time.monotonic()

    enriched = drained("enrich", TOPICS.sensors, target)
    detected = drained("detect", TOPICS.enriched, stack.end_offset(TOPICS.enriched))
    return {
        "events": report.sent,
        "send_seconds": round(sent - started, 2),
        "enrich_done_seconds": round(enriched - started, 2),
        "enrich_and_detect_done_seconds": round(detected - started, 2),
        "events_per_second_enrich": round(report.sent / (enriched - started)),
        "events_per_second_enrich_and_detect": round(report.sent / (detected - started)),
        "note": (
            "seconds from the first event sent; enrich and detect run at once (micro-batches "
            "every 5 s), each with one executor of 1 core, on the 2 cores the whole cluster "
            "shares"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {}
    with started_cluster(timings) as cluster, tempfile.TemporaryDirectory() as work:
        timings.update(build_carstream_image(cluster))
        stack, install_timings = install(cluster, CARSTREAM_IMAGE, Path(work), bench_values(args))
        timings.update(install_timings)
        try:
            seconds = first_window(stack)
            result["install_to_first_window_seconds"] = round(seconds, 1)
            print(f"helm install -> first window on alert-counts: {seconds:.1f} s", flush=True)
            kills = []
            for n in range(args.kills):
                kills.append(kill_enrich_driver(stack))
                print(f"kill {n + 1}: replacement driver Running after {kills[-1]:.1f} s")
            result["driver_deleted_to_replacement_running_seconds"] = {
                "backoff_seconds": args.backoff,
                "kills": len(kills),
                "p50": round(statistics.median(kills), 1),
                "p99": round(percentile(kills, 0.99), 1),
                "all": [round(k, 1) for k in kills],
            }
            result["drain_in_pods"] = drain(stack, args.events)
            print(f"drain: {json.dumps(result['drain_in_pods'])}", flush=True)
        finally:
            uninstall_quietly(stack)
    document = {
        "benchmark": "cluster",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine(),
        "cluster": "localcluster: two nodes on this host, values-local.yaml (standalone Kafka; "
        "warehouse and checkpoints in the chart's S3 server, versitygw)",
        **result,
        "setup_seconds": {name: round(seconds, 1) for name, seconds in timings.items()},
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
