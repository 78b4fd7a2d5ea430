"""Serverless stages in the decision function: wake on backlog (spec.wake), stop when idle
(spec.idleStopSeconds), and what happens when Kafka cannot be read."""

from __future__ import annotations

from typing import Any

import pytest

from carstream_operator import stage_decisions as sd
from carstream_operator.model import SPARK_COMPLETED
from carstream_operator.wake import BacklogView
from tests.operator.stage_simulation import SimulatedStage, stage_spec

WAKE = {"minRecords": 100, "maxDelaySeconds": 60, "checkSeconds": 5}


def sleeper(**overrides: Any) -> SimulatedStage:
    spec: dict[str, Any] = {"trigger": {"type": "availableNow"}, "wake": WAKE, **overrides}
    return SimulatedStage(stage_spec(**spec))


def backlog(records: int, age: float | None = None, end: int = 0) -> BacklogView:
    return BacklogView(records, age, {"sensors-sample/0": end})


def condition(stage: SimulatedStage, kind: str) -> tuple[str, str]:
    found = next(c for c in stage.status.conditions if c.type == kind)
    return found.status, found.reason


def test_a_quiet_topic_runs_no_application() -> None:
    stage = sleeper()
    plan = stage.settle()
    assert stage.created == []
    assert (stage.status.phase, stage.status.reason) == (sd.IDLE, "WaitingForBacklog")
    assert stage.status.ready, "an idle stage is as good as a running one for its dependents"
    assert plan.requeue_after == 5
    assert stage.status.wake.backlog_records == 0
    assert condition(stage, "BacklogKnown") == ("True", "Read")


def test_min_records_wake_one_run_and_none_while_it_runs() -> None:
    stage = sleeper()
    stage.settle()
    stage.backlog = backlog(100, age=3, end=900)
    stage.step()
    assert stage.created == ["demo-enrich-1"]
    assert stage.status.wake.last_reason == "Backlog"
    assert stage.status.wake.run_offsets == {"sensors-sample/0": 900}
    assert ("Normal", "WokeUp") in stage.events()

    stage.backlog = backlog(5000, age=50, end=5800)  # a burst while the run drains
    stage.set_state("RUNNING")
    reads = stage.backlog_reads
    stage.settle()
    assert stage.created == ["demo-enrich-1"], "never two runs at once"
    assert stage.backlog_reads == reads, "no backlog is read while a run is live"

    stage.set_state(SPARK_COMPLETED)
    plan = stage.step()
    assert stage.deleted == ["demo-enrich-1"]
    assert (stage.status.phase, stage.status.reason) == (sd.IDLE, "Completed")
    assert stage.status.wake.drained_offsets == {"sensors-sample/0": 900}
    assert plan.requeue_after == 0, "the backlog left over is looked at right away"
    stage.step()
    assert stage.created == ["demo-enrich-1", "demo-enrich-2"], "the burst gets the next run"


def test_one_record_waits_for_max_delay_and_no_longer() -> None:
    stage = sleeper()
    stage.backlog = backlog(1, age=20)
    plan = stage.settle()
    assert stage.created == []
    assert plan.requeue_after == 5
    stage.backlog = backlog(1, age=58)
    plan = stage.step()
    assert plan.requeue_after == pytest.approx(2), "looks again when the record turns 60 s old"
    stage.advance(2)
    stage.backlog = backlog(1, age=60)
    stage.step()
    assert stage.created == ["demo-enrich-1"]
    assert stage.status.wake.last_reason == "MaxDelay"


def test_kafka_unreachable_starts_nothing_stops_nothing_and_backs_off() -> None:
    stage = sleeper()
    stage.backlog_error = "_TRANSPORT: connection refused"
    waits = [stage.step().requeue_after for _ in range(4)]
    assert waits == [5, 10, 20, 40]
    assert stage.created == []
    assert condition(stage, "BacklogKnown") == ("False", "KafkaUnavailable")
    assert "connection refused" in stage.status.wake.backlog_error

    stage.backlog_error = None
    stage.backlog = backlog(0)
    assert stage.step().requeue_after == 5
    assert condition(stage, "BacklogKnown") == ("True", "Read")
    assert stage.status.wake.backlog_failures == 0


def test_a_failed_wake_run_follows_the_restart_policy() -> None:
    stage = sleeper(restartPolicy={"maxRestarts": 1, "initialBackoffSeconds": 10})
    stage.backlog = backlog(500, age=1, end=500)
    stage.step()
    stage.set_state("FAILED", error="boom")
    stage.step()
    assert stage.status.phase == sd.BACKING_OFF
    stage.advance(10)
    stage.step()
    assert stage.created == ["demo-enrich-1", "demo-enrich-2"]
    stage.set_state("FAILED", error="boom again")
    stage.step()
    # the backlog is still there: waking again at once would loop; a person looks first
    assert (stage.status.phase, stage.status.reason) == (sd.FAILED, "GaveUp")
    assert stage.status.wake.drained_offsets == {}, "a failed run drained nothing"
    reads = stage.backlog_reads
    stage.advance(600)
    stage.settle()
    assert stage.created == ["demo-enrich-1", "demo-enrich-2"]
    assert stage.backlog_reads == reads


def test_schedule_and_wake_whichever_comes_first() -> None:
    stage = sleeper(schedule="*/10 * * * *")
    stage.settle()
    assert stage.status.next_run_time is not None
    assert stage.created == []
    stage.now = stage.status.next_run_time
    stage.step()
    assert stage.created == ["demo-enrich-1"]
    assert stage.status.wake.last_reason == "Schedule"


def test_a_scheduled_sleeper_that_gave_up_waits_for_the_next_tick() -> None:
    stage = sleeper(schedule="0 * * * *", restartPolicy={"maxRestarts": 0})
    stage.backlog = backlog(500, age=1, end=500)
    stage.step()
    stage.set_state("FAILED", error="boom")
    stage.step()
    assert (stage.status.phase, stage.status.reason) == (sd.IDLE, "RunFailed")
    stage.backlog = backlog(500, age=120, end=500)  # past maxDelaySeconds: no busy loop
    plan = stage.step()
    assert plan.requeue_after == 5, "looks again at the usual pace"
    stage.advance(60)
    stage.settle()
    assert stage.created == ["demo-enrich-1"], "the same backlog does not wake it again"
    assert stage.status.next_run_time is not None
    stage.now = stage.status.next_run_time
    stage.step()
    assert stage.created == ["demo-enrich-1", "demo-enrich-2"]
    assert stage.status.wake.last_reason == "Schedule"


def test_an_idle_processing_time_stage_stops_for_good_without_wake() -> None:
    stage = SimulatedStage(stage_spec(idleStopSeconds=60))
    stage.settle()
    stage.set_state("RUNNING")
    stage.step()
    stage.set_state(SPARK_COMPLETED)
    stage.settle()
    assert (stage.status.phase, stage.status.reason) == (sd.IDLE, "IdleStopped")
    assert stage.status.ready
    assert stage.created == ["demo-enrich-1"], "no new run without wake"
    assert stage.backlog_reads == 0


def test_an_idle_processing_time_stage_with_wake_comes_back_on_backlog() -> None:
    stage = SimulatedStage(stage_spec(idleStopSeconds=60, wake=WAKE))
    stage.backlog = backlog(300, age=1, end=300)
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    stage.set_state(SPARK_COMPLETED)
    stage.backlog = backlog(0, end=300)
    stage.settle()
    assert (stage.status.phase, stage.status.reason) == (sd.IDLE, "IdleStopped")
    assert stage.created == ["demo-enrich-1"]
    stage.backlog = backlog(150, age=2, end=450)
    stage.step()
    assert stage.created == ["demo-enrich-1", "demo-enrich-2"]


def test_a_suspended_sleeper_reads_no_backlog() -> None:
    stage = sleeper(suspend=True)
    stage.backlog = backlog(10_000, age=600)
    stage.settle()
    assert stage.created == []
    assert stage.backlog_reads == 0
    assert stage.status.phase == sd.SUSPENDED
