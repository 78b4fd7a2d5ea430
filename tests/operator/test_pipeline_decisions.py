"""A Pipeline's children and summary, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from carstream_operator import builders
from carstream_operator.pipeline_decisions import ExistingStage, plan_stages, summarize
from tests.operator.examples import pipeline_spec

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def existing(spec: dict[str, Any], phases: dict[str, str] | None = None) -> list[ExistingStage]:
    result = []
    for name, stage_spec in builders.stage_specs("demo", spec).items():
        status = {"phase": (phases or {}).get(name, "Pending")}
        result.append(ExistingStage(name, f"demo-{name}", stage_spec, status))
    return result


def test_a_new_pipeline_creates_one_stage_per_entry_in_order() -> None:
    plan = plan_stages("demo", pipeline_spec(), [])
    assert [spec["stage"] for spec in plan.create] == [
        "dims",
        "generate",
        "enrich",
        "detect",
        "count",
    ]
    assert plan.update == () and plan.delete == ()


def test_stages_equal_once_defaults_are_applied_are_left_alone() -> None:
    spec = pipeline_spec()
    stages = existing(spec)
    # What the API server stores: the defaults filled in.
    defaulted = dict(stages[2].spec)
    defaulted["trigger"] = {"type": "processingTime", "interval": "5 seconds"}
    defaulted["restartPolicy"] = {"maxRestarts": 5, "initialBackoffSeconds": 10}
    defaulted["imagePullPolicy"] = "IfNotPresent"
    stages[2] = ExistingStage("enrich", "demo-enrich", defaulted, {})
    plan = plan_stages("demo", spec, stages)
    assert plan == plan_stages("demo", spec, existing(spec))
    assert plan.create == () and plan.update == () and plan.delete == ()


def test_a_changed_stage_is_updated_and_a_removed_one_deleted() -> None:
    spec = pipeline_spec()
    stages = existing(spec)
    changed = pipeline_spec(stages=spec["stages"][:4])
    changed["stages"][3]["args"] = ["--speed-limit", "100"]
    plan = plan_stages("demo", changed, stages)
    assert [name for name, _ in plan.update] == ["demo-detect"]
    assert plan.update[0][1]["args"] == ["--speed-limit", "100"]
    assert plan.delete == ("demo-count",)
    assert plan.create == ()


def test_a_pipeline_wide_change_updates_every_stage() -> None:
    spec = pipeline_spec()
    plan = plan_stages("demo", pipeline_spec(image="carstream:0.2.0"), existing(spec))
    assert len(plan.update) == 5
    assert all(stage_spec["image"] == "carstream:0.2.0" for _, stage_spec in plan.update)


def summary(phases: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    spec = pipeline_spec()
    return summarize(spec, existing(spec, phases), generation=3, previous=None, now=NOW, **kwargs)


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_summary_of_a_pipeline_coming_up() -> None:
    status = summary({"dims": "Succeeded", "enrich": "Running", "generate": "Starting"})
    assert status["phase"] == "Progressing"
    assert status["readyStages"] == "2/5"
    assert status["observedGeneration"] == 3
    assert conditions(status) == {"Ready": "False", "Progressing": "True", "Degraded": "False"}
    assert [s["name"] for s in status["stages"]] == [
        "dims",
        "generate",
        "enrich",
        "detect",
        "count",
    ]


def test_summary_phases() -> None:
    settled = {"dims": "Succeeded", "generate": "Running", "enrich": "Running"}
    assert summary({})["phase"] == "Pending"
    running = summary({**settled, "detect": "Running", "count": "Scheduled"})
    assert running["phase"] == "Running"
    assert running["readyStages"] == "5/5"
    assert conditions(running)["Ready"] == "True"
    failed = summary({**settled, "detect": "Failed"})
    assert failed["phase"] == "Failed"
    assert conditions(failed)["Degraded"] == "True"
    backing_off = summary({**settled, "detect": "BackingOff", "count": "Running"})
    assert backing_off["phase"] == "Progressing"
    assert conditions(backing_off)["Degraded"] == "True"
    all_done = {name: "Succeeded" for name in ("dims", "generate", "enrich", "detect", "count")}
    assert summary(all_done)["phase"] == "Succeeded"
    suspended = {name: "Suspended" for name in ("generate", "enrich", "detect", "count")}
    assert summary({"dims": "Succeeded", **suspended})["phase"] == "Suspended"


def test_the_degraded_condition_says_why_each_failing_stage_fails() -> None:
    spec = pipeline_spec()
    stages = existing(spec, {"dims": "Succeeded", "generate": "Running", "count": "Pending"})
    enrich_status = {
        "phase": "BackingOff",
        "reason": "KafkaAuthenticationFailed",
        "message": "demo-enrich-2 FAILED: Kafka refused the login of user carstream-enrich: "
        "SaslAuthenticationException: Authentication failed; restart 2 of 5 in 20s",
    }
    detect_status = {"phase": "Failed", "reason": "GaveUp", "message": "x" * 400}
    stages[2] = ExistingStage("enrich", "demo-enrich", stages[2].spec, enrich_status)
    stages[3] = ExistingStage("detect", "demo-detect", stages[3].spec, detect_status)
    status = summarize(spec, stages, generation=1, previous=None, now=NOW)
    assert [(s["name"], s["reason"]) for s in status["stages"][2:4]] == [
        ("enrich", "KafkaAuthenticationFailed"),
        ("detect", "GaveUp"),
    ]
    (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
    assert degraded["reason"] == "StagesFailing"
    assert degraded["message"] == (
        f"failing: enrich (KafkaAuthenticationFailed: {enrich_status['message']}), "
        f"detect (GaveUp: {'x' * 297}...)"
    )


def test_summary_adds_up_restarts() -> None:
    spec = pipeline_spec()
    stages = existing(spec, {"enrich": "Running"})
    stages[2] = ExistingStage("enrich", "demo-enrich", stages[2].spec, {"restarts": 2})
    stages[3] = ExistingStage("detect", "demo-detect", stages[3].spec, {"restarts": 1})
    status = summarize(spec, stages, generation=1, previous=None, now=NOW)
    assert status["restarts"] == 3


def test_summary_keeps_condition_times_while_unchanged() -> None:
    first = summary({"dims": "Starting"})
    spec = pipeline_spec()
    later = summarize(
        spec,
        existing(spec, {"dims": "Running"}),
        generation=3,
        previous=first,
        now=NOW + timedelta(minutes=5),
    )

    def times(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["lastTransitionTime"]) for c in status["conditions"]}

    assert times(first) == times(later)
    assert later["readyStages"] == "1/5"
