"""A failed stage says why: the reason its driver wrote into its termination message becomes
the stage's reason, condition reason and Event reason (plain decisions, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from carstream import termination
from carstream_operator import driver_failure
from carstream_operator import stage_decisions as sd
from carstream_operator.driver_failure import DriverFailure
from carstream_operator.model import ApplicationView, StageStatus
from tests.operator.stage_simulation import T0, SimulatedStage, stage_spec

SPARK_OPERATOR_ERROR = "driver container failed with ExitCode: 1, Reason: Error"
LOGIN_REFUSED = (
    "Kafka refused the login of user carstream-enrich: SaslAuthenticationException: "
    "Authentication failed during authentication due to invalid credentials with SASL "
    "mechanism SCRAM-SHA-512"
)
# What Kubernetes keeps when the driver wrote nothing (FallbackToLogsOnError): its log's end.
LOG_TAIL = """26/11/29 22:45:33 INFO SparkContext: Running Spark version 4.2.0
Traceback (most recent call last):
  File "/opt/carstream/main.py", line 3, in <module>
    from carstream.cli import main
ModuleNotFoundError: No module named 'carstream'
"""
POLICY = {"maxRestarts": 2, "initialBackoffSeconds": 10, "backoffFactor": 2}


def running_stage() -> SimulatedStage:
    stage = SimulatedStage(stage_spec(restartPolicy=POLICY))
    stage.step()
    stage.set_state("RUNNING")
    stage.step()
    return stage


def conditions(stage: SimulatedStage) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in stage.status.conditions}


def test_the_drivers_reason_becomes_the_stages_reason_condition_and_event() -> None:
    stage = running_stage()
    stage.set_state(
        "FAILED",
        error=SPARK_OPERATOR_ERROR,
        driver_message=f"KafkaAuthenticationFailed: {LOGIN_REFUSED}\n",
    )
    plan = stage.step()
    status = stage.status
    assert (status.phase, status.reason) == (sd.BACKING_OFF, "KafkaAuthenticationFailed")
    assert status.message == f"demo-enrich-1 FAILED: {LOGIN_REFUSED}; restart 1 of 2 in 10s"
    assert conditions(stage)["Degraded"] == ("True", "KafkaAuthenticationFailed", status.message)
    assert conditions(stage)["Ready"][0:2] == ("False", "KafkaAuthenticationFailed")
    assert [(e.type, e.reason, e.message) for e in plan.events] == [
        ("Warning", "KafkaAuthenticationFailed", status.message)
    ]
    assert [d.name for d in plan.delete] == ["demo-enrich-1"]
    assert plan.delete[0].reason == "KafkaAuthenticationFailed"

    # Then the restart with its backoff, as for any failure.
    stage.advance(9.9)
    assert stage.step().create is None
    stage.advance(0.1)
    restart = stage.step()
    assert restart.create == sd.CreateApplication("demo-enrich-2", run=2, restarts=1)
    assert (stage.status.phase, stage.status.reason) == (sd.STARTING, "Restarting")


def test_the_last_failure_keeps_its_reason_in_the_message_when_the_stage_gives_up() -> None:
    stage = running_stage()
    for restart in (1, 2):
        stage.set_state("FAILED", driver_message=f"KafkaAuthorizationFailed: denied {restart}")
        stage.step()
        assert stage.status.reason == "KafkaAuthorizationFailed"
        stage.advance(60)
        stage.settle()
        stage.set_state("RUNNING")
        stage.step()
    stage.set_state("FAILED", driver_message="KafkaAuthorizationFailed: denied again")
    plan = stage.step()
    assert (stage.status.phase, stage.status.reason) == (sd.FAILED, "GaveUp")
    assert stage.status.message == (
        "KafkaAuthorizationFailed: demo-enrich-3 FAILED: denied again; gave up after 2 restarts"
    )
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "GaveUp")]
    assert ("Warning", "KafkaAuthorizationFailed") in stage.events()


def test_without_a_reason_from_the_driver_the_failure_is_spark_operators() -> None:
    stage = running_stage()
    stage.set_state("FAILED", error=SPARK_OPERATOR_ERROR)
    stage.step()
    assert stage.status.reason == "ApplicationFailed"
    assert stage.status.message.startswith(f"demo-enrich-1 FAILED: {SPARK_OPERATOR_ERROR}; ")


def test_the_end_of_the_drivers_log_is_shown_but_is_no_reason() -> None:
    stage = running_stage()
    stage.set_state("FAILED", error=SPARK_OPERATOR_ERROR, driver_message=LOG_TAIL)
    stage.step()
    assert stage.status.reason == "ApplicationFailed"
    assert stage.status.message == (
        f"demo-enrich-1 FAILED: {SPARK_OPERATOR_ERROR}; ModuleNotFoundError: No module named "
        "'carstream'; restart 1 of 2 in 10s"
    )


def test_a_submission_failure_has_no_driver_to_ask() -> None:
    stage = running_stage()
    stage.set_state("SUBMISSION_FAILED", error="spark-submit failed")
    stage.step()
    assert stage.status.reason == "SubmissionFailed"
    assert stage.status.message.startswith("demo-enrich-1 SUBMISSION_FAILED: spark-submit failed")


def application(**changes: Any) -> ApplicationView:
    fields: dict[str, Any] = {
        "name": "demo-enrich-3",
        "run": 3,
        "restarts": 2,
        "spec_hash": "hash-1",
        "state": "FAILED",
        "error_message": SPARK_OPERATOR_ERROR,
        "created": T0,
        "deleting": False,
        "driver_pod": "demo-enrich-3-driver",
    }
    fields.update(changes)
    return ApplicationView(**fields)


@pytest.mark.parametrize(
    ("phase", "changes", "needed"),
    [
        (sd.RUNNING, {}, True),
        (sd.STARTING, {}, True),
        (sd.BACKING_OFF, {}, False),  # recorded already: no pod read at every resync
        (sd.FAILED, {}, False),  # gave up: the application stays, its failure is recorded
        (sd.RUNNING, {"state": "RUNNING"}, False),
        (sd.RUNNING, {"driver_pod": ""}, False),  # spark-operator has not named it
        (sd.RUNNING, {"deleting": True}, False),
        (sd.RUNNING, {"run": 2}, False),  # an older run, being superseded
        (sd.BACKING_OFF, {"run": 4, "name": "demo-enrich-4"}, True),  # to be adopted
    ],
)
def test_the_driver_pod_is_read_only_for_a_failure_not_recorded_yet(
    phase: str, changes: dict[str, Any], needed: bool
) -> None:
    status = StageStatus(phase=phase, run=3, application="demo-enrich-3")
    assert sd.driver_message_needed(status, application(**changes)) is needed


def driver_pod(message: str | None, container: str = "spark-kubernetes-driver") -> dict[str, Any]:
    """A driver pod's status as the API returns it."""
    terminated = {"exitCode": 1, "reason": "Error"}
    if message is not None:
        terminated["message"] = message
    return {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "istio-proxy", "state": {"terminated": {"message": "not ours"}}},
                {"name": container, "state": {"terminated": terminated}},
            ],
        }
    }


def test_the_termination_message_of_the_driver_container() -> None:
    assert driver_failure.termination_message(driver_pod("DimensionMissing: x")) == (
        "DimensionMissing: x"
    )
    assert driver_failure.termination_message(driver_pod(None)) == ""
    assert driver_failure.termination_message(driver_pod("x", container="other")) == ""
    running = {"status": {"containerStatuses": [{"name": "spark-kubernetes-driver"}]}}
    assert driver_failure.termination_message(running) == ""
    assert driver_failure.termination_message({}) == ""


@pytest.mark.parametrize(
    "message",
    [
        "",
        "no reason here",
        "lowercase: message",
        "Two Words: message",
        "Reason:",
        "Reason: ",
        "Reason:message",
        "Reason: first line\nsecond line",
        LOG_TAIL,
    ],
)
def test_only_a_reason_and_a_message_on_one_line_make_a_reason(message: str) -> None:
    assert driver_failure.parse(message) is None


def test_a_reason_line_and_a_long_message() -> None:
    assert driver_failure.parse("StageError: ValueError: bad\n") == DriverFailure(
        "StageError", "ValueError: bad"
    )
    long = driver_failure.parse("StageError: " + "y" * 5000)
    assert long is not None and len(long.message) == driver_failure.MAX_MESSAGE_CHARS
    assert driver_failure.last_line(LOG_TAIL) == "ModuleNotFoundError: No module named 'carstream'"
    assert driver_failure.last_line("\n \n") == ""


@pytest.mark.parametrize("reason", termination.REASONS)
def test_every_reason_a_stage_writes_is_one_the_operator_reads(reason: str) -> None:
    """The contract between carstream.termination (jobs) and driver_failure (operator)."""
    written = termination.Termination(reason, "what happened: in one line").line()
    assert driver_failure.parse(written) == DriverFailure(reason, "what happened: in one line")
