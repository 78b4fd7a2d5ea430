"""The stage state machine, without a cluster: `decide_stage` driven step by step."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from carstream_operator import stage_decisions as sd
from carstream_operator.model import ApplicationView, RestartPolicy
from tests.operator.stage_simulation import DESIRED_HASH, T0, SimulatedStage, stage_spec

FAST_RESTARTS = {
    "maxRestarts": 3,
    "initialBackoffSeconds": 1,
    "maxBackoffSeconds": 3,
    "backoffFactor": 2,
    "resetAfterSeconds": 60,
}


def condition(stage: SimulatedStage, kind: str) -> str:
    return next(c.status for c in stage.status.conditions if c.type == kind)


def test_a_stage_without_dependencies_creates_its_first_run() -> None:
    stage = SimulatedStage(stage_spec())
    plan = stage.step()
    assert plan.create == sd.CreateApplication(name="demo-enrich-1", run=1, restarts=0)
    assert stage.status.phase == sd.STARTING
    assert stage.status.reason == "Created"
    assert stage.status.start_time == T0
    assert stage.status.spec_hash == DESIRED_HASH
    assert condition(stage, "Progressing") == "True"
    assert condition(stage, "Ready") == "False"
    # The start deadline (default 600 s) is the next thing due.
    assert plan.requeue_after == 600


def test_a_stage_waits_until_its_dependencies_are_ready() -> None:
    stage = SimulatedStage(stage_spec(dependsOn=["dims", "generate"]))
    stage.dependencies = {"dims": True, "generate": False}
    plan = stage.step()
    assert plan.create is None
    assert stage.status.phase == sd.PENDING
    assert stage.status.reason == "WaitingForDependencies"
    assert "generate" in stage.status.message and "dims" not in stage.status.message
    stage.dependencies["generate"] = True
    assert stage.step().create is not None


def test_dependencies_are_only_looked_up_before_the_first_start() -> None:
    spec = stage_spec(dependsOn=["dims"])
    stage = SimulatedStage(spec)
    assert sd.dependencies_needed(spec, stage.status)
    stage.dependencies = {"dims": True}
    stage.step()
    assert not sd.dependencies_needed(spec, stage.status)


def test_a_streaming_stage_is_ready_while_running() -> None:
    stage = SimulatedStage(stage_spec())
    stage.step()
    stage.set_state("SUBMITTED")
    stage.step()
    assert stage.status.phase == sd.STARTING
    stage.set_state("RUNNING")
    stage.step()
    assert stage.status.phase == sd.RUNNING
    assert stage.status.ready
    assert stage.status.running_since == T0
    assert stage.status.application_state == "RUNNING"
    assert condition(stage, "Ready") == "True"
    assert condition(stage, "Progressing") == "False"


def test_a_run_to_completion_stage_is_ready_when_it_succeeded() -> None:
    stage = SimulatedStage(stage_spec(stage="dims", job="dims"))
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    assert stage.status.phase == sd.RUNNING and not stage.status.ready
    stage.advance(5)
    stage.set_state("COMPLETED")
    plan = stage.step()
    assert stage.status.phase == sd.SUCCEEDED
    assert stage.status.reason == "Completed"
    assert stage.status.ready
    assert stage.status.last_success_time == stage.now
    assert plan.delete == ()  # the completed application stays, with its logs
    assert stage.settle().create is None


def test_an_available_now_streaming_stage_runs_to_completion() -> None:
    spec = stage_spec(trigger={"type": "availableNow"})
    assert spec.runs_to_completion
    assert not stage_spec().runs_to_completion


def test_failures_restart_after_growing_capped_backoffs_then_give_up() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    delays = []
    for failure in range(1, 4):
        stage.set_state("FAILED", error="driver OOM")
        failed = stage.step()
        assert stage.status.phase == sd.BACKING_OFF
        assert stage.status.reason == "ApplicationFailed"
        assert "driver OOM" in stage.status.message
        assert failed.delete and not stage.applications
        assert condition(stage, "Degraded") == "True"
        restart_at = stage.status.next_restart_time
        assert restart_at is not None
        delays.append((restart_at - stage.now).total_seconds())
        assert failed.requeue_after == delays[-1]
        # Not yet: nothing is created before the backoff is over.
        stage.advance(delays[-1] - 0.1)
        assert stage.step().create is None
        stage.advance(0.1)
        plan = stage.step()
        assert plan.create is not None
        assert plan.create.run == failure + 1
        assert plan.create.restarts == failure
        assert plan.outcomes == (sd.RESTART,)
        assert stage.status.reason == "Restarting"
        stage.set_state("RUNNING")
        stage.step()
    assert delays == [1, 2, 3]  # 1, 2, then 4 capped at 3
    stage.set_state("FAILED")
    plan = stage.step()
    assert stage.status.phase == sd.FAILED
    assert stage.status.reason == "GaveUp"
    assert stage.status.restarts == 3
    assert plan.outcomes == (sd.GAVE_UP,)
    assert plan.delete == ()  # the last failed application stays, for its logs
    stage.advance(3600)
    assert stage.settle().create is None
    assert ("Warning", "GaveUp") in stage.events()
    assert ("Warning", "ApplicationFailed") in stage.events()
    assert stage.created == ["demo-enrich-1", "demo-enrich-2", "demo-enrich-3", "demo-enrich-4"]


def test_submission_failures_and_vanished_applications_count_as_failures() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("SUBMISSION_FAILED", error="spark-submit exited 1")
    stage.step()
    assert stage.status.reason == "SubmissionFailed"
    assert stage.status.restarts == 0
    stage.advance(1)
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    stage.vanish()
    stage.step()
    assert stage.status.phase == sd.BACKING_OFF
    assert stage.status.reason == "ApplicationVanished"
    assert stage.status.restarts == 1
    assert (stage.status.next_restart_time - stage.now).total_seconds() == 2


def test_no_restarts_allowed_fails_at_the_first_failure() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy={"maxRestarts": 0}))
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    assert stage.status.phase == sd.FAILED


def test_a_stable_run_resets_the_restart_count() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    stage.advance(1)
    stage.step()
    stage.set_state("RUNNING")
    plan = stage.step()
    assert stage.status.restarts == 1
    assert plan.requeue_after == 60  # when the run becomes stable
    stage.advance(60)
    stage.step()
    assert stage.status.restarts == 0
    assert ("Normal", "RestartCountReset") in stage.events()


def test_a_failure_after_a_stable_run_starts_counting_afresh() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.status = stage.status.replace(restarts=3)  # as if the reset was missed
    stage.step()
    stage.status = stage.status.replace(restarts=3)
    stage.set_state("RUNNING")
    stage.step()
    stage.advance(61)
    stage.set_state("FAILED")
    stage.step()
    assert stage.status.phase == sd.BACKING_OFF
    assert stage.status.restarts == 0


def test_the_time_limit_stops_the_application_and_succeeds() -> None:
    stage = SimulatedStage(
        stage_spec(
            stage="generate", job="generate", timeLimitSeconds=10, restartPolicy=FAST_RESTARTS
        )
    )
    stage.step()
    stage.set_state("RUNNING")
    assert stage.step().requeue_after == 10
    # A restart in between does not reset the clock.
    stage.advance(4)
    stage.set_state("FAILED")
    stage.step()
    stage.advance(1)
    stage.step()
    stage.set_state("RUNNING")
    plan = stage.step()
    assert plan.requeue_after == 5
    stage.advance(5)
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-2"]
    assert plan.outcomes == (sd.TIME_LIMIT,)
    assert stage.status.phase == sd.SUCCEEDED
    assert stage.status.reason == "TimeLimitReached"
    assert stage.status.ready
    assert ("Normal", "TimeLimitReached") in stage.events()
    assert stage.settle().create is None


def test_an_application_stuck_before_running_hits_the_start_deadline() -> None:
    stage = SimulatedStage(stage_spec(startDeadlineSeconds=30, restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("SUBMITTED")
    stage.advance(29)
    assert stage.step().requeue_after == pytest.approx(1)
    stage.advance(1)
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-1"]
    assert plan.outcomes == (sd.START_DEADLINE,)
    assert stage.status.phase == sd.BACKING_OFF
    assert stage.status.reason == "StartDeadlineExceeded"


def test_suspend_stops_the_application_and_resume_starts_a_new_run() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    stage.advance(1)
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    stage.spec = dataclasses.replace(stage.spec, suspend=True)
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-2"]
    assert stage.status.phase == sd.SUSPENDED
    stage.advance(3600)
    assert stage.settle().create is None
    assert plan.requeue_after is None
    stage.spec = dataclasses.replace(stage.spec, suspend=False)
    plan = stage.step()
    assert plan.create == sd.CreateApplication("demo-enrich-3", run=3, restarts=0)
    assert stage.status.reason == "Resumed"
    assert stage.status.start_time == stage.now


def test_suspend_leaves_a_succeeded_stage_alone() -> None:
    stage = SimulatedStage(stage_spec(stage="dims", job="dims"))
    stage.step()
    stage.set_state("COMPLETED")
    stage.step()
    stage.spec = dataclasses.replace(stage.spec, suspend=True)
    plan = stage.step()
    assert stage.status.phase == sd.SUCCEEDED and plan.delete == ()


def test_a_suspended_stage_that_never_started_waits_for_its_dependencies_again() -> None:
    stage = SimulatedStage(stage_spec(dependsOn=["dims"], suspend=True))
    stage.step()
    assert stage.status.phase == sd.SUSPENDED
    stage.spec = dataclasses.replace(stage.spec, suspend=False)
    stage.step()
    assert stage.status.phase == sd.PENDING


def test_a_spec_change_replaces_the_running_application() -> None:
    stage = SimulatedStage(stage_spec(timeLimitSeconds=100, restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    stage.advance(1)
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    stage.desired_hash = "hash-2"
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-2"]
    assert plan.create is None
    assert stage.status.phase == sd.STOPPING
    plan = stage.step()
    assert plan.create == sd.CreateApplication("demo-enrich-3", run=3, restarts=1)
    assert stage.status.reason == "Replaced"
    assert stage.status.spec_hash == "hash-2"
    assert stage.status.start_time == T0  # the time limit still counts from the first start


def test_a_spec_change_runs_a_finished_stage_again() -> None:
    stage = SimulatedStage(stage_spec(stage="dims", job="dims"))
    stage.step()
    stage.set_state("COMPLETED")
    stage.step()
    stage.desired_hash = "hash-2"
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-1"]
    assert stage.status.phase == sd.STOPPING
    plan = stage.step()
    assert plan.create is not None and plan.create.run == 2


def test_a_scheduled_stage_runs_once_per_tick_and_is_idle_in_between() -> None:
    spec = stage_spec(
        stage="count", job="count", trigger={"type": "availableNow"}, schedule="*/5 * * * *"
    )
    stage = SimulatedStage(spec)
    plan = stage.step()
    assert plan.create is None
    assert stage.status.phase == sd.SCHEDULED
    assert stage.status.next_run_time == T0 + timedelta(minutes=5)
    assert plan.requeue_after == 300
    stage.advance(300)
    plan = stage.step()
    assert plan.create is not None
    assert stage.status.reason == "RunStarted"
    assert stage.status.next_run_time == T0 + timedelta(minutes=10)
    stage.set_state("RUNNING")
    stage.step()
    # The run outlasts the next tick: that tick is skipped, never a second application.
    stage.advance(301)
    plan = stage.step()
    assert plan.create is None
    assert ("Normal", "RunSkipped") in stage.events()
    assert stage.status.next_run_time == T0 + timedelta(minutes=15)
    stage.set_state("COMPLETED")
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-1"]
    assert stage.status.phase == sd.SCHEDULED
    assert stage.status.last_success_time == stage.now
    assert stage.status.ready
    assert not stage.applications
    stage.advance(100)
    assert stage.step().create is None
    stage.advance(200)
    plan = stage.step()
    assert plan.create is not None and plan.create.run == 2


def test_a_scheduled_run_that_keeps_failing_waits_for_the_next_tick() -> None:
    spec = stage_spec(
        stage="count",
        job="count",
        trigger={"type": "availableNow"},
        schedule="0 * * * *",
        restartPolicy={"maxRestarts": 1, "initialBackoffSeconds": 1},
    )
    stage = SimulatedStage(spec)
    stage.step()
    stage.advance(3600)
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    stage.advance(1)
    stage.step()
    stage.set_state("FAILED")
    plan = stage.step()
    assert plan.delete and not stage.applications
    assert stage.status.phase == sd.SCHEDULED
    assert stage.status.reason == "RunFailed"
    assert stage.status.restarts == 0
    assert condition(stage, "Degraded") == "True"
    assert ("Warning", "RunFailed") in stage.events()


def test_a_schedule_croniter_cannot_follow_fails_the_stage() -> None:
    spec = stage_spec(
        stage="count", job="count", trigger={"type": "availableNow"}, schedule="0 0 31 2 *"
    )
    stage = SimulatedStage(spec)
    stage.step()
    assert stage.status.phase == sd.FAILED
    assert stage.status.reason == "InvalidSchedule"


def test_an_application_the_status_does_not_know_is_adopted_not_duplicated() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    stage.advance(1)
    # The operator created run 2 and was killed before it recorded it.
    before = stage.status
    stage.step()
    stage.status = before
    plan = stage.step()
    assert plan.create is None
    assert stage.status.run == 2
    assert stage.status.restarts == 1
    assert stage.status.application == "demo-enrich-2"
    assert stage.status.phase == sd.STARTING
    assert stage.status.reason == "Adopted"


def test_only_the_latest_application_survives() -> None:
    stage = SimulatedStage(stage_spec())
    stage.step()
    stage.applications["demo-enrich-0"] = dataclasses.replace(
        stage.current(), name="demo-enrich-0", run=0
    )
    plan = stage.step()
    assert [d.name for d in plan.delete] == ["demo-enrich-0"]
    assert stage.status.application == "demo-enrich-1"


def test_no_new_application_while_an_old_one_is_being_deleted() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    stage.applications["demo-enrich-1"] = ApplicationView(
        "demo-enrich-1", 1, 0, DESIRED_HASH, "FAILED", "", T0, deleting=True
    )
    stage.advance(5)
    assert stage.step().create is None
    del stage.applications["demo-enrich-1"]
    assert stage.step().create is not None


def test_a_rejected_application_fails_the_stage_until_the_spec_changes() -> None:
    stage = SimulatedStage(stage_spec())
    observation = sd.StageObservation(
        name=stage.name,
        generation=1,
        spec=stage.spec,
        status=stage.status,
        applications=(),
        dependencies=None,
        desired_spec_hash=DESIRED_HASH,
    )
    plan = sd.decide_stage(observation, T0)
    rejected = sd.application_rejected(observation, plan, "spec.driver.cores: bad", T0)
    assert rejected.status.phase == sd.FAILED
    assert rejected.status.reason == "InvalidApplication"
    assert rejected.status.run == 0
    assert rejected.create is None
    assert rejected.events[0].type == "Warning"
    stage.status = rejected.status
    assert stage.step().create is None
    stage.desired_hash = "hash-2"
    assert stage.step().create is not None


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    stage = SimulatedStage(stage_spec())
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    ready_since = next(c for c in stage.status.conditions if c.type == "Ready").last_transition_time
    stage.advance(30)
    stage.step()
    assert next(c for c in stage.status.conditions if c.type == "Ready").last_transition_time == (
        ready_since
    )


def test_every_phase_change_posts_an_event() -> None:
    stage = SimulatedStage(stage_spec(restartPolicy=FAST_RESTARTS))
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    stage.set_state("FAILED")
    stage.step()
    assert stage.events() == [
        ("Normal", "Created"),
        ("Normal", "ApplicationRunning"),
        ("Warning", "ApplicationFailed"),
    ]


@pytest.mark.parametrize(
    ("restart", "expected"), [(1, 10.0), (2, 20.0), (3, 40.0), (6, 300.0), (50, 300.0)]
)
def test_backoff_grows_by_the_factor_up_to_the_maximum(restart: int, expected: float) -> None:
    assert RestartPolicy().backoff_seconds(restart) == expected
