"""carstream on a real cluster: installed with helm as the README's walkthrough does, the
real spark-operator submits every stage, Spark drivers and executors run in pods, and what
comes out of the pods is checked from outside, like the local integration tests do.

The checks build on each other, in this order: the stages start in dependency order; a
killed enrich driver is replaced; generate stops at its time limit; the counts then equal an
independent recomputation (so the kill lost nothing and counted nothing twice); a suspended
stage resumes from its checkpoint; ACLs hold; bad Pipelines fail clearly while the good one
keeps running; `helm test`; `helm uninstall` leaves no pod."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from carstream.config import GeneratorSettings, Topics
from carstream.stages import generate
from carstream.storage import read_parquet
from localcluster.layout import NODES
from tests.e2e.harness import E2ECluster
from tests.e2e.stack import (
    NAMESPACE,
    PIPELINE,
    POLL_SECONDS,
    RELEASE,
    Stack,
    install,
    local_values,
    uninstall_quietly,
)
from tests.fixtures.kafka import consume, json_values, produce_outcome
from tests.fixtures.waiting import wait_for
from tests.integration.expected import (
    expected_outputs,
    latest_per_key,
    read_profiles,
    window_counts,
)

# The pipeline runs for real: images, Spark start-ups and a few minutes of events.
pytestmark = pytest.mark.timeout(3600)

GENERATE_SECONDS = 150
WINDOW_SECONDS, SLIDE_SECONDS = 15 * 60, 60  # the counter's defaults
TOPICS = Topics()
EXTRA_EVENTS = 100
WAKE_EVENTS = 1000  # enough for a few alerts, which wake the sleeping counter
STARTING = 900  # seconds a stage may take to reach its phase on 2 busy cores


def e2e_values() -> dict[str, Any]:
    """Over values-local.yaml, one change for the checks: generate stops after
    GENERATE_SECONDS (timeLimitSeconds), so that the counts can settle and be compared."""
    stages = copy.deepcopy(local_values()["carstream"]["pipeline"]["stages"])
    for stage in stages:
        if stage["name"] == "generate":
            stage["timeLimitSeconds"] = GENERATE_SECONDS
    return {"carstream": {"pipeline": {"stages": stages}}}


@pytest.fixture(scope="module")
def stack(
    cluster: E2ECluster,
    carstream_image: str,
    timings: dict[str, float],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("stack")
    stack, install_timings = install(cluster, carstream_image, work, e2e_values())
    timings.update(install_timings)
    yield stack
    uninstall_quietly(stack)


def _pods(stack: Stack, role: str) -> list[dict[str, Any]]:
    return stack.items("pods", f"--selector=spark-role={role}")


def test_the_stages_start_in_dependency_order(stack: Stack, timings: dict[str, float]) -> None:
    dims = stack.wait_stage("dims", lambda s: s.get("phase") == "Succeeded", STARTING, "done")
    running = {}
    for name in ("generate", "enrich", "detect", "count"):
        running[name] = stack.wait_stage(
            name, lambda s: s.get("phase") == "Running", STARTING, "Running"
        )
    timings["helm install -> all stages Running"] = time.monotonic() - stack.installed_at

    def started(status: dict[str, Any]) -> str:
        return str(status["startTime"])

    # RFC 3339 times in UTC compare as text.
    assert started(running["generate"]) >= dims["lastSuccessTime"]
    assert started(running["enrich"]) >= dims["lastSuccessTime"]
    assert started(running["detect"]) >= running["enrich"]["runningSince"]
    assert started(running["count"]) >= running["detect"]["runningSince"]

    # The Pipeline's summary follows its stages' status events, a moment after them.
    def ready_stages() -> str | None:
        ready = stack.kubectl(
            "get", "pipeline", PIPELINE, f"--namespace={NAMESPACE}",
            "--output=jsonpath={.status.readyStages}",
        )  # fmt: skip
        return ready if ready == "5/5" else None

    wait_for(ready_stages, "the Pipeline to count 5/5 stages ready", 60, POLL_SECONDS)

    # A driver runs before it has asked for its executor: wait for one per streaming stage.
    def three_executors() -> list[dict[str, Any]] | None:
        pods = _pods(stack, "executor")
        return pods if len(pods) >= 3 else None

    executors = wait_for(
        three_executors, "an executor pod of enrich, detect and count each", STARTING, POLL_SECONDS
    )
    assert {p["spec"]["nodeName"] for p in executors} == {NODES[1].name}, "on the executor node"
    drivers = _pods(stack, "driver")
    assert {p["spec"]["nodeName"] for p in drivers} == {NODES[0].name}, "drivers on the driver node"

    wait_for(
        lambda: stack.end_offset(TOPICS.counts) > 0,
        "the first window on alert-counts",
        STARTING,
        POLL_SECONDS,
    )
    timings["helm install -> first window on alert-counts"] = time.monotonic() - stack.installed_at


def test_a_driver_serves_its_stages_metrics(stack: Stack) -> None:
    """What `carstream run --metrics-port` serves locally, a driver pod serves on its port
    `metrics` (read through the API server's pod proxy)."""
    detect = stack.stage("detect")
    driver = stack.driver_pod(detect["application"])
    assert driver is not None, f"no driver pod of {detect['application']}"
    (port,) = [
        p["containerPort"]
        for c in driver["spec"]["containers"]
        for p in c.get("ports", [])
        if p["name"] == "metrics"
    ]
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{driver['metadata']['name']}:{port}/proxy/metrics"

    def batches_counted() -> str | None:
        text = stack.kubectl("get", "--raw", path)
        return text if "carstream_query_batches_total{" in text else None

    text = wait_for(batches_counted, "detect's first counted micro-batch", STARTING, POLL_SECONDS)
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("pipeline") == PIPELINE and sample.labels.get("stage") == "detect"
    ]
    lag = {s.labels["topic"] for s in samples if s.name == "carstream_query_consumer_lag_records"}
    assert lag == {TOPICS.enriched}
    outcomes = {s.labels["outcome"] for s in samples if s.name == "carstream_stage_records_total"}
    assert "valid" in outcomes


def test_a_killed_enrich_driver_is_replaced_with_backoff(
    stack: Stack, timings: dict[str, float]
) -> None:
    before = stack.stage("enrich")
    assert before["phase"] == "Running" and before["restarts"] == 0
    driver = stack.driver_pod(before["application"])
    assert driver is not None, f"no driver pod of {before['application']}"
    killed = time.monotonic()
    stack.kubectl(
        "delete", "pod", driver["metadata"]["name"], f"--namespace={NAMESPACE}",
        "--grace-period=0", "--force",
    )  # fmt: skip
    after = stack.wait_stage(
        "enrich",
        lambda s: s.get("phase") == "Running" and s.get("application") != before["application"],
        STARTING,
        "Running again with a new application",
    )
    timings["enrich driver deleted -> replacement Running"] = time.monotonic() - killed
    assert after["restarts"] == 1
    assert after["lastFailureTime"] >= before["runningSince"]
    reasons = {event["reason"] for event in stack.events(f"{PIPELINE}-enrich")}
    assert "Restarting" in reasons or "Replaced" in reasons, reasons


def test_generate_ends_at_its_time_limit(stack: Stack) -> None:
    status = stack.wait_stage(
        "generate",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        GENERATE_SECONDS + STARTING,
        "over",
    )
    assert (status["phase"], status["reason"]) == ("Succeeded", "TimeLimitReached"), status


def _expected_windows(stack: Stack) -> tuple[dict[str, Any], Any]:
    viewer = stack.kafka("carstream-viewer")  # the chart's read-only user
    sensors = [m.value() or b"" for m in consume(viewer, TOPICS.sensors)]
    storage = stack.storage()
    expected = expected_outputs(
        sensors,
        read_profiles(lambda table: read_parquet(storage.dim_path(table), storage.s3)),
    )
    return window_counts(expected.alerts.values(), WINDOW_SECONDS, SLIDE_SECONDS), expected


def _wait_for_counts(stack: Stack, windows: dict[str, Any], timeout: float) -> None:
    viewer = stack.kafka("carstream-viewer")
    last: dict[str, Any] = {}

    def equal() -> bool:
        nonlocal last
        last = latest_per_key((m.key(), m.value()) for m in consume(viewer, TOPICS.counts))
        return last == windows

    try:
        wait_for(equal, "alert-counts to equal the recomputation", timeout, interval=10)
    except AssertionError:
        wrong = {k: (last.get(k), v) for k, v in windows.items() if last.get(k) != v}
        extra = sorted(set(last) - set(windows))
        raise AssertionError(
            f"{len(wrong)} of {len(windows)} windows differ (got, expected): "
            f"{json.dumps(dict(list(wrong.items())[:3]), indent=1)}; unexpected windows: {extra}"
        ) from None


def test_the_counts_equal_an_independent_recomputation(stack: Stack) -> None:
    windows, expected = _expected_windows(stack)
    assert len(expected.enriched) >= GENERATE_SECONDS * 10, "generate sent its events"
    assert windows, "some events broke a rule"
    _wait_for_counts(stack, windows, timeout=600)
    viewer = stack.kafka("carstream-viewer")
    enriched = {e["event_id"] for e in json_values(consume(viewer, TOPICS.enriched))}
    assert enriched == set(expected.enriched), (
        "every event enriched, none invented, despite the kill"
    )

    count = stack.stage("count")
    driver = stack.driver_pod(count["application"])
    assert driver is not None, f"no driver pod of {count['application']}"
    log = stack.kubectl("logs", driver["metadata"]["name"], f"--namespace={NAMESPACE}")
    printed = re.findall(r"alert counts, batch \d+: ([1-9]\d*) window\(s\) updated", log)
    assert printed, f"no window in the count driver's log; its end:\n{log[-2000:]}"


def _set_suspend(stack: Stack, stage: str, suspend: bool) -> None:
    spec = stack.get("pipeline", PIPELINE)["spec"]
    stages = [{**s, "suspend": suspend} if s["name"] == stage else s for s in spec["stages"]]
    stack.patch_pipeline({"spec": {"stages": stages}})


def test_a_suspended_stage_resumes_from_its_checkpoint(stack: Stack) -> None:
    alerts_before = stack.end_offset(TOPICS.alerts)
    _set_suspend(stack, "detect", True)
    stack.wait_stage("detect", lambda s: s.get("phase") == "Suspended", 300, "Suspended")
    wait_for(
        lambda: not stack.items("sparkapplications", "--selector=carstream.io/stage=detect"),
        "detect's SparkApplication to be deleted",
        300,
        POLL_SECONDS,
    )

    # New events while detect is away: enrich takes them, detect must pick them up later.
    admin = stack.kafka("carstream-kafka-admin")
    cars = generate.read_car_ids(stack.storage())
    report = generate.run(admin, TOPICS, GeneratorSettings(rate=100, max_events=EXTRA_EVENTS), cars)
    assert report.sent == EXTRA_EVENTS

    _set_suspend(stack, "detect", False)
    stack.wait_stage("detect", lambda s: s.get("phase") == "Running", STARTING, "Running")
    windows, expected = _expected_windows(stack)
    _wait_for_counts(stack, windows, timeout=600)
    grown = stack.end_offset(TOPICS.alerts) - alerts_before
    assert grown < len(expected.alerts), (
        f"alert-data grew by {grown}, as many as all {len(expected.alerts)} alerts: detect "
        "started over instead of resuming from its checkpoint"
    )


def _set_stage(stack: Stack, stage: str, **fields: Any) -> None:
    """Sets (or, with None, removes) fields of one stage of the Pipeline."""
    spec = stack.get("pipeline", PIPELINE)["spec"]
    stages = []
    for item in spec["stages"]:
        if item["name"] == stage:
            item = {k: v for k, v in {**item, **fields}.items() if v is not None}
        stages.append(item)
    stack.patch_pipeline({"spec": {"stages": stages}})


def test_a_sleeping_stage_runs_no_pods_and_wakes_on_backlog(stack: Stack) -> None:
    wake = {"minRecords": 5, "maxDelaySeconds": 3600, "checkSeconds": 5}
    _set_stage(stack, "count", trigger={"type": "availableNow"}, wake=wake)

    # The spec change replaces count's application by one availableNow run; then it sleeps,
    # with the backlog read by the operator's own Kafka user from its pod.
    def asleep(status: dict[str, Any]) -> bool:
        drained = (status.get("backlog") or {}).get("records") == 0
        return status.get("phase") == "Idle" and status.get("reason") == "Completed" and drained

    idle = stack.wait_stage("count", asleep, STARTING, "Idle with nothing to do")
    # The run ended with its consumer groups at its last offsets: nothing woke it again.
    assert "lastReason" not in (idle.get("wake") or {}), idle
    known = {c["type"]: c for c in idle["conditions"]}["BacklogKnown"]
    assert known["status"] == "True", known
    wait_for(
        lambda: not stack.items("pods", "--selector=carstream.io/stage=count"),
        "count's pods to be gone",
        300,
        POLL_SECONDS,
    )
    assert not stack.items("sparkapplications", "--selector=carstream.io/stage=count")

    # New events: detect turns some into alerts, count's backlog grows and wakes it.
    admin = stack.kafka("carstream-kafka-admin")
    cars = generate.read_car_ids(stack.storage())
    generate.run(admin, TOPICS, GeneratorSettings(rate=500, max_events=WAKE_EVENTS), cars)
    woken = stack.wait_stage("count", lambda s: s.get("run", 0) > idle["run"], STARTING, "woken")
    assert woken["wake"]["lastReason"] == "Backlog", woken
    stack.wait_stage(
        "count", lambda s: asleep(s) and s["run"] == woken["run"], STARTING, "asleep again"
    )
    reasons = {event["reason"] for event in stack.events(f"{PIPELINE}-count")}
    assert "WokeUp" in reasons, reasons
    windows, _ = _expected_windows(stack)
    _wait_for_counts(stack, windows, timeout=600)

    # Always on again, for the checks after this one.
    _set_stage(
        stack, "count", trigger={"type": "processingTime", "interval": "5 seconds"}, wake=None
    )
    stack.wait_stage("count", lambda s: s.get("phase") == "Running", STARTING, "Running")


def test_a_stage_user_is_refused_outside_its_acls(stack: Stack) -> None:
    enrich = stack.kafka("carstream-enrich")
    sent, errors = produce_outcome(enrich, TOPICS.counts, [(b"k", b"{}")], timeout=30)
    assert sent == 1
    assert [error.code() for error in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def _bad_pipeline(stack: Stack, name: str, **changes: Any) -> dict[str, Any]:
    """A Pipeline like the chart's, with one stage and `changes` to its spec."""
    spec = copy.deepcopy(stack.get("pipeline", PIPELINE)["spec"])
    spec.update(changes)
    return {
        "apiVersion": "carstream.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def _stage_spec(stack: Stack, name: str, **changes: Any) -> dict[str, Any]:
    spec = stack.get("pipeline", PIPELINE)["spec"]
    stage = next(s for s in spec["stages"] if s["name"] == name)
    stage = {key: value for key, value in stage.items() if key not in ("dependsOn", "suspend")}
    return {**stage, **changes}


def test_bad_pipelines_fail_clearly_and_the_good_one_keeps_running(stack: Stack) -> None:
    no_retry = {"maxRestarts": 0}
    missing_image = _bad_pipeline(
        stack,
        "missing-image",
        image="carstream:no-such-tag",
        stages=[_stage_spec(stack, "dims", startDeadlineSeconds=60, restartPolicy=no_retry)],
    )
    password = stack.secret_value("carstream-generate", "password")
    stack.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "wrong-password", "namespace": NAMESPACE},
            "stringData": {"password": password + "-wrong"},
        }
    )
    wrong_password = _bad_pipeline(
        stack,
        "wrong-password",
        stages=[
            _stage_spec(
                stack,
                "generate",
                kafkaCredentialsSecret={"name": "wrong-password", "username": "carstream-generate"},
                restartPolicy=no_retry,
                timeLimitSeconds=600,
            )
        ],
    )
    stack.kubectl.apply([missing_image, wrong_password])
    try:
        image = stack.wait_stage(
            "dims", lambda s: s.get("phase") == "Failed", STARTING, "Failed", "missing-image"
        )
        assert "StartDeadlineExceeded" in image["message"], image
        events = [f"{e['reason']}: {e['message']}" for e in stack.events("missing-image-dims")]
        assert any("StartDeadlineExceeded" in event for event in events), events

        auth = stack.wait_stage(
            "generate", lambda s: s.get("phase") == "Failed", STARTING, "Failed", "wrong-password"
        )
        told = [auth["reason"], auth["message"]] + [
            f"{e['reason']} {e['message']}" for e in stack.events("wrong-password-generate")
        ]
        assert any("Authentication" in text for text in told), told

        for name in ("enrich", "detect", "count"):
            assert stack.stage(name)["phase"] == "Running", f"{name} stopped meanwhile"
    finally:
        for pipeline in ("missing-image", "wrong-password"):
            stack.kubectl("delete", "pipeline", pipeline, f"--namespace={NAMESPACE}", "--wait")
        stack.kubectl("delete", "secret", "wrong-password", f"--namespace={NAMESPACE}")


def test_helm_test_passes(stack: Stack) -> None:
    result = stack.helm("test", RELEASE, f"--namespace={NAMESPACE}", "--timeout=15m", timeout=960)
    assert "Phase:          Succeeded" in result.stdout, result.stdout


def test_helm_uninstall_leaves_no_carstream_pod(stack: Stack) -> None:
    stack.helm("uninstall", RELEASE, f"--namespace={NAMESPACE}", "--timeout=2m")
    stack.uninstalled = True
    kinds = "pipelines,pipelinestages,sparkapplications,pods,persistentvolumeclaims"

    def leftovers() -> list[str]:
        found = stack.items(kinds)
        return [
            f"{o['kind']}/{o['metadata']['name']} finalizers={o['metadata'].get('finalizers')} "
            f"deleting={'deletionTimestamp' in o['metadata']}"
            for o in found
        ]

    remaining: list[str] = []

    def gone() -> bool:
        nonlocal remaining
        remaining = leftovers()
        return not remaining

    try:
        wait_for(gone, "the release's objects and pods to be gone", 300, interval=5)
    except AssertionError as error:
        raise AssertionError(f"{error}; left: {remaining}") from None
