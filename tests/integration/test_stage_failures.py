"""A stage that cannot work says why: `carstream stage NAME` against the chart's standalone
Kafka (a real broker with SCRAM-SHA-512 and ACLs, set up by `carstream kafka-setup`) with a
wrong password, or denied a topic, exits 1 on its own (no time limit, no trigger that ends)
and writes the reason into its termination message file, where Kubernetes would read it."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from carstream import termination
from carstream.broker import EmbeddedBroker
from carstream.config import DimsSettings, StorageSettings, Topics
from carstream.stages import dims
from tests.fixtures.kafka import admin_login, produce
from tests.integration.kafka_users import Setup, apply_chart_plan
from tests.integration.processes import run_carstream
from tests.unit.messages import enriched_event

TOPICS = Topics()
# A stage that neither fails nor ends runs until this timeout fails the test.
STAGE_TIMEOUT_SECONDS = 300
SCRAM_REFUSED = (
    "Authentication failed during authentication due to invalid credentials with SASL "
    "mechanism SCRAM-SHA-512"
)


@pytest.fixture(scope="module")
def users(secured_kafka_broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The chart's topics, users and ACLs on this module's secured broker."""
    return apply_chart_plan(secured_kafka_broker, tmp_path_factory.mktemp("kafka-users"))


@pytest.fixture(scope="module")
def warehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("warehouse")
    dims.run(spark, DimsSettings(num_cars=5, seed=3), StorageSettings(warehouse=str(folder)))
    return folder


@dataclass
class Ended:
    result: subprocess.CompletedProcess[str]
    message: str
    """What the stage wrote into its termination message file."""


def run_stage(
    users: Setup, tmp_path: Path, job: str, *args: str, role: str | None = None, password: str = ""
) -> Ended:
    """`carstream stage JOB` as the chart's user of `role` (default: the job's), with its
    password or `password`, and an empty termination message file as the kubelet makes it."""
    user = f"carstream-{role or job}"
    log = tmp_path / "termination-log"
    log.touch()
    flags = [
        "--bootstrap-servers",
        users.broker.bootstrap_servers,
        "--kafka-security-protocol",
        "SASL_PLAINTEXT",
        "--kafka-sasl-mechanism",
        "SCRAM-SHA-512",
    ]
    if job != "generate":
        flags += ["--checkpoint-location", str(tmp_path / "checkpoint")]
    env = {
        "CARSTREAM_KAFKA_USERNAME": user,
        "CARSTREAM_KAFKA_PASSWORD": password or users.password(user),
        termination.PATH_ENV: str(log),
    }
    result = run_carstream(
        ["stage", job, *flags, *args], timeout=STAGE_TIMEOUT_SECONDS, env={**os.environ, **env}
    )
    return Ended(result, log.read_text())


def assert_failed_with(ended: Ended, job: str, reason: str) -> None:
    output = ended.result.stdout + ended.result.stderr
    assert ended.result.returncode == 1, output[-4000:]
    assert ended.message.startswith(f"{reason}: "), ended.message
    assert "\n" not in ended.message
    assert f"carstream stage {job}: {ended.message}" in ended.result.stderr
    assert "Traceback" not in ended.result.stderr


def test_the_generator_with_a_wrong_password_stops_at_the_refused_login(
    users: Setup, warehouse: Path, tmp_path: Path
) -> None:
    ended = run_stage(users, tmp_path, "generate", "--warehouse", str(warehouse), password="no")
    assert_failed_with(ended, "generate", "KafkaAuthenticationFailed")
    assert ended.message.startswith(
        "KafkaAuthenticationFailed: Kafka refused the login of user carstream-generate: "
        "_AUTHENTICATION: sasl_plaintext://"
    )
    assert f"SASL authentication error: {SCRAM_REFUSED}" in ended.message


@pytest.mark.parametrize("job", ["enrich", "detect", "count"])
def test_a_spark_stage_with_a_wrong_password_stops_at_the_refused_login(
    users: Setup, warehouse: Path, tmp_path: Path, job: str
) -> None:
    args = ["--warehouse", str(warehouse)] if job == "enrich" else []
    ended = run_stage(users, tmp_path, job, *args, password="wrong-password")
    assert_failed_with(ended, job, "KafkaAuthenticationFailed")
    assert ended.message == (
        f"KafkaAuthenticationFailed: Kafka refused the login of user carstream-{job}: "
        f"SaslAuthenticationException: {SCRAM_REFUSED}"
    )


def test_the_generator_denied_its_topic(users: Setup, warehouse: Path, tmp_path: Path) -> None:
    ended = run_stage(
        users, tmp_path, "generate", "--warehouse", str(warehouse), "--topic-sensors", TOPICS.alerts
    )
    assert_failed_with(ended, "generate", "KafkaAuthorizationFailed")
    assert ended.message.startswith(
        "KafkaAuthorizationFailed: Kafka denied user carstream-generate what its ACLs do not "
        "allow: TOPIC_AUTHORIZATION_FAILED: "
    )
    assert ended.message.endswith("Broker: Topic authorization failed")


def test_a_spark_stage_denied_its_input_topic(
    users: Setup, warehouse: Path, tmp_path: Path
) -> None:
    ended = run_stage(
        users, tmp_path, "enrich", "--warehouse", str(warehouse), "--topic-sensors", TOPICS.alerts
    )
    assert_failed_with(ended, "enrich", "KafkaAuthorizationFailed")
    assert ended.message == (
        "KafkaAuthorizationFailed: Kafka denied user carstream-enrich what its ACLs do not "
        "allow: TopicAuthorizationException: Topic authorization failed."
    )


def test_a_spark_stage_denied_its_output_topic(users: Setup, tmp_path: Path) -> None:
    """Spark's Kafka sink (the executors' producer) refused: detect may read samples-enriched
    but not write sensors-sample."""
    alert = enriched_event(event_id="fast-1", speed=199)
    produce(admin_login(users.broker), TOPICS.enriched, [(b"1234567", json.dumps(alert))])
    ended = run_stage(
        users, tmp_path, "detect", "--trigger", "availableNow", "--topic-alerts", TOPICS.sensors
    )
    assert_failed_with(ended, "detect", "KafkaAuthorizationFailed")
    assert ended.message.startswith(
        "KafkaAuthorizationFailed: Kafka denied user carstream-detect what its ACLs do not "
        "allow: TopicAuthorizationException: "
    ), ended.message


def test_a_spark_stage_without_its_dimensions(users: Setup, tmp_path: Path) -> None:
    empty = tmp_path / "empty-warehouse"
    ended = run_stage(users, tmp_path, "enrich", "--warehouse", str(empty))
    assert_failed_with(ended, "enrich", "DimensionMissing")
    assert ended.message == (
        f"DimensionMissing: the car_models dimension is not at {empty}/dims/car_models: run "
        "`carstream stage dims` first"
    )
