"""Sleeping stages against a real API server and a real broker: the operator reads the input
topic's backlog (as Kafka shows it) and starts a run on minRecords or maxDelaySeconds, never
two at once; with Kafka away it neither starts nor stops anything. The test plays spark-operator
(application states) and produces the records."""

from __future__ import annotations

import time
from typing import Any

from carstream.config import KafkaSettings, Topics
from tests.fixtures.kafka import produce
from tests.fixtures.kube import free_ports
from tests.operator.examples import pipeline_spec
from tests.operator.harness import OperatorProcess, SparkOperatorStandIn, wait_for

CHECK_SECONDS = 2
STAGE = "w-enrich"


def sleeping_pipeline(bootstrap: str, topics: Topics, **wake: int) -> dict[str, Any]:
    stage = {
        "name": "enrich",
        "trigger": {"type": "availableNow"},
        "wake": {"checkSeconds": CHECK_SECONDS, **wake},
        "args": [f"--topic-sensors={topics.sensors}"],
    }
    return pipeline_spec([stage], kafka={"bootstrapServers": bootstrap})


def records(count: int) -> list[tuple[bytes, bytes]]:
    return [(str(n).encode(), b'{"event_id": "%d"}' % n) for n in range(count)]


def last_wake(spark_operator: SparkOperatorStandIn) -> str:
    """The reason of the last wake, once the status has it (a moment after the application)."""
    reason: str = wait_for(
        lambda: (spark_operator.stage_status(STAGE).get("wake") or {}).get("lastReason"),
        "status.wake.lastReason",
    )
    return reason


def backlog(spark_operator: SparkOperatorStandIn) -> dict[str, Any]:
    found: dict[str, Any] = spark_operator.stage_status(STAGE).get("backlog") or {}
    return found


def test_a_sleeping_stage_wakes_on_min_records_and_runs_one_at_a_time(
    kafka: KafkaSettings,
    topics: Topics,
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
) -> None:
    max_delay = 3
    spark_operator.create_pipeline(
        "w",
        sleeping_pipeline(
            kafka.bootstrap_servers, topics, minRecords=50, maxDelaySeconds=max_delay
        ),
    )
    spark_operator.wait_for_phase(STAGE, "Idle", "WaitingForBacklog")
    wait_for(lambda: backlog(spark_operator).get("records") == 0, "the empty backlog read")
    time.sleep(max_delay + CHECK_SECONDS)
    assert spark_operator.log.added_names() == [], "a quiet topic runs nothing, however long"

    produce(kafka, topics.sensors, records(50))
    produced = time.monotonic()
    first = spark_operator.wait_for_application(STAGE, timeout=CHECK_SECONDS + 5)
    woke_after = (spark_operator.log.added_at(first) or 0) - produced
    assert woke_after <= CHECK_SECONDS + 1, f"woke {woke_after:.1f} s after the records"
    assert last_wake(spark_operator) == "Backlog"

    # a burst while the run drains: no second run
    spark_operator.set_state(first, "RUNNING")
    produce(kafka, topics.sensors, records(200))
    time.sleep(2 * CHECK_SECONDS)
    assert spark_operator.application_names(STAGE) == [first]

    # the first run ends: what it did not drain (the burst) gets a second run
    spark_operator.set_state(first, "COMPLETED")
    second = wait_for(
        lambda: [n for n in spark_operator.application_names(STAGE) if n != first] or None,
        "the second run",
        timeout=10,
    )[0]
    assert spark_operator.log.deleted_at(first) is not None
    assert (spark_operator.log.deleted_at(first) or 0) <= (spark_operator.log.added_at(second) or 0)

    # drained: no application, backlog 0, nothing more
    spark_operator.set_state(second, "RUNNING")
    spark_operator.set_state(second, "COMPLETED")
    spark_operator.wait_for_phase(STAGE, "Idle", "Completed")
    wait_for(lambda: backlog(spark_operator).get("records") == 0, "the backlog drained")
    time.sleep(2 * CHECK_SECONDS)
    assert spark_operator.application_names(STAGE) == []
    assert spark_operator.log.max_live_per_stage[STAGE] == 1
    spark_operator.wait_for_events(STAGE, "WokeUp")
    labels = {"pipeline": "w", "stage": "enrich", "reason": "Backlog"}
    assert operator_process.metric("carstream_operator_stage_wakes_total", **labels) == 2


def test_one_record_starts_a_run_after_max_delay_and_not_before(
    kafka: KafkaSettings,
    topics: Topics,
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
) -> None:
    delay = 8
    pipeline = sleeping_pipeline(
        kafka.bootstrap_servers, topics, minRecords=1000, maxDelaySeconds=delay
    )
    spark_operator.create_pipeline("w", pipeline)
    spark_operator.wait_for_phase(STAGE, "Idle", "WaitingForBacklog")
    produce(kafka, topics.sensors, records(1))
    produced = time.monotonic()
    wait_for(lambda: backlog(spark_operator).get("records") == 1, "the record seen")
    application = spark_operator.wait_for_application(STAGE, timeout=delay + CHECK_SECONDS + 5)
    waited = (spark_operator.log.added_at(application) or 0) - produced
    assert delay - 1 <= waited <= delay + 2, f"started {waited:.1f} s after the record"
    assert last_wake(spark_operator) == "MaxDelay"


def test_with_kafka_away_nothing_is_started_or_stopped(
    topics: Topics,
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
) -> None:
    (port,) = free_ports(1)
    spark_operator.create_pipeline(
        "w", sleeping_pipeline(f"127.0.0.1:{port}", topics, minRecords=1, maxDelaySeconds=1)
    )
    spark_operator.wait_for_phase(STAGE, "Idle")

    def unavailable() -> dict[str, Any] | None:
        conditions = spark_operator.stage_status(STAGE).get("conditions") or []
        found = next((c for c in conditions if c["type"] == "BacklogKnown"), None)
        return found if found and found["reason"] == "KafkaUnavailable" else None

    condition = wait_for(unavailable, "the BacklogKnown condition", timeout=30)
    assert condition["status"] == "False"
    assert "cannot read the backlog" in condition["message"]
    assert backlog(spark_operator)["error"]
    assert spark_operator.log.added_names() == [] and spark_operator.log.deleted == []
    assert spark_operator.stage_status(STAGE)["phase"] == "Idle"
