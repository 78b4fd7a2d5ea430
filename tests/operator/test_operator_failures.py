"""A failed driver says why, on the real API server: the operator reads the termination message
of the driver pod of a FAILED SparkApplication and shows its reason on the PipelineStage (status,
conditions, Events) and the Pipeline, restarts the stage with its backoff as for any failure,
and goes on with other Pipelines."""

from __future__ import annotations

import time
from typing import Any

from tests.operator.examples import pipeline_spec
from tests.operator.harness import OperatorProcess, SparkOperatorStandIn, wait_for

LOGIN_REFUSED = (
    "Kafka refused the login of user carstream-enrich: SaslAuthenticationException: "
    "Authentication failed during authentication due to invalid credentials with SASL "
    "mechanism SCRAM-SHA-512"
)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [c for c in status["conditions"] if c["type"] == kind]
    return found


def one_stage_pipeline(
    spark_operator: SparkOperatorStandIn, name: str, stage: str, **restart_policy: float
) -> None:
    stages = [{"name": stage, "restartPolicy": restart_policy}]
    spark_operator.create_pipeline(name, pipeline_spec(stages=stages))


def running(spark_operator: SparkOperatorStandIn, stage: str) -> str:
    application = spark_operator.wait_for_application(stage)
    spark_operator.set_state(application, "RUNNING")
    spark_operator.wait_for_phase(stage, "Running")
    return application


def test_a_refused_kafka_login_shows_on_the_stage_and_the_pipeline(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    one_stage_pipeline(spark_operator, "locked", "enrich", maxRestarts=1, initialBackoffSeconds=1)
    first = running(spark_operator, "locked-enrich")
    failed_at = time.monotonic()
    spark_operator.fail_driver(first, f"KafkaAuthenticationFailed: {LOGIN_REFUSED}")
    status = spark_operator.wait_for_phase(
        "locked-enrich", "BackingOff", "KafkaAuthenticationFailed"
    )
    assert status["message"] == f"{first} FAILED: {LOGIN_REFUSED}; restart 1 of 1 in 1s"
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "KafkaAuthenticationFailed")
    spark_operator.wait_for_events("locked-enrich", "KafkaAuthenticationFailed")
    (event,) = [e for e in spark_operator.events("locked-enrich") if e[1].startswith("Kafka")]
    assert event == ("Warning", "KafkaAuthenticationFailed", status["message"])

    # The restart, after the backoff, as for any failure.
    second = "locked-enrich-2"
    restarted_at = wait_for(lambda: spark_operator.log.added_at(second), f"{second}")
    assert restarted_at - failed_at >= 1.0
    spark_operator.set_state(second, "RUNNING")
    spark_operator.wait_for_phase("locked-enrich", "Running")

    # Failing again, it gives up; the reason stays in the message, up to the Pipeline.
    spark_operator.fail_driver(second, f"KafkaAuthenticationFailed: {LOGIN_REFUSED}")
    status = spark_operator.wait_for_phase("locked-enrich", "Failed", "GaveUp")
    assert status["message"] == (
        f"KafkaAuthenticationFailed: {second} FAILED: {LOGIN_REFUSED}; gave up after 1 restarts"
    )

    def failed_pipeline() -> dict[str, Any] | None:
        pipeline = spark_operator.get_pipeline("locked")
        status = (pipeline or {}).get("status") or {}
        return status if status.get("phase") == "Failed" else None

    pipeline = wait_for(failed_pipeline, "the Pipeline to fail")
    assert pipeline["stages"][0]["reason"] == "GaveUp"
    assert condition(pipeline, "Degraded")["message"].startswith(
        f"failing: enrich (GaveUp: KafkaAuthenticationFailed: {second} FAILED: Kafka refused "
        "the login of user carstream-enrich: "
    )


def test_a_driver_that_wrote_no_reason_is_an_application_failure_and_others_go_on(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    one_stage_pipeline(spark_operator, "broken", "detect", maxRestarts=3, initialBackoffSeconds=30)
    one_stage_pipeline(spark_operator, "healthy", "detect")
    broken = running(spark_operator, "broken-detect")
    # With nothing written, Kubernetes keeps the end of the driver's log (FallbackToLogsOnError).
    spark_operator.fail_driver(broken, "INFO starting\nModuleNotFoundError: No module named 'x'")
    status = spark_operator.wait_for_phase("broken-detect", "BackingOff", "ApplicationFailed")
    assert status["message"] == (
        f"{broken} FAILED: driver container failed with ExitCode: 1, Reason: Error; "
        "ModuleNotFoundError: No module named 'x'; restart 1 of 3 in 30s"
    )
    # The other Pipeline is reconciled meanwhile.
    running(spark_operator, "healthy-detect")
    assert "Traceback" not in operator_process.log()
