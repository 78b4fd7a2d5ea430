"""The termination message of a failed stage: the reason and message `classify` finds in real
exception texts (captured from Spark's Kafka source and from confluent-kafka against the
secured test broker), what `write` puts where Kubernetes reads it, and the `carstream stage`
hook that does both."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import NoReturn

import pytest
from confluent_kafka import KafkaError, KafkaException
from pyspark.errors.exceptions.captured import StreamingQueryException
from pyspark.sql import SparkSession

from carstream import cli, spark_io, stages, termination
from carstream.stages import generate
from carstream.storage import StorageError
from carstream.termination import Termination, classify

# str() of the StreamingQueryException that enrich ended with, logging in to the secured
# broker with a wrong password, denied its input topic, and against a closed port (the
# logical plan shortened).
QUERY_HEADER = """
=== Streaming Query ===
Identifier: enrich [id = f7b877b9-6d68-4c98-85f9-d356d938d9ed, runId = 1f891c41-...]
Current Committed Offsets: {}
Current Available Offsets: {}

Current State: ACTIVE
Thread State: RUNNABLE

Logical Plan:
WriteToMicroBatchDataSource KafkaTable
+- ~Project [CASE WHEN isnotnull(reason#76) THEN sensors-dlq ELSE samples-enriched END AS topic#82]
"""
SPARK_AUTHENTICATION = (
    "[STREAM_FAILED] Query [id = f7b877b9-6d68-4c98-85f9-d356d938d9ed, runId = "
    "1f891c41-4a9d-4e53-917c-09e81795ac74] terminated with exception: "
    "org.apache.kafka.common.errors.SaslAuthenticationException: Authentication failed during "
    "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 SQLSTATE: "
    "XXKST" + QUERY_HEADER
)
PY4J_AUTHENTICATION = (
    "An error occurred while calling o880.awaitTermination.\n"
    ": org.apache.spark.sql.streaming.StreamingQueryException: "
    "org.apache.kafka.common.errors.SaslAuthenticationException: Authentication failed during "
    "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512" + QUERY_HEADER
)
SPARK_AUTHORIZATION = (
    "[STREAM_FAILED] Query [id = 3b9689c8-7074-4bf4-b7b6-b51e8eea2dd2, runId = "
    "5e59dc86-510d-4ebf-bc49-717e5513e577] terminated with exception: "
    "org.apache.kafka.common.errors.TopicAuthorizationException: Topic authorization failed. "
    "SQLSTATE: XXKST" + QUERY_HEADER
)
SPARK_UNREACHABLE = (
    "[STREAM_FAILED] Query [id = 7b49e2cd-d310-497e-958f-2c9b3d9606ac, runId = "
    "2d2f1ccd-181d-41a3-b1e4-b5a9aef2f07f] terminated with exception: "
    "org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment. "
    "Call: listNodes SQLSTATE: XXKST" + QUERY_HEADER
)
# confluent-kafka (the generator): what error_cb and the delivery reports received.
RDKAFKA_AUTHENTICATION = (
    "sasl_plaintext://127.0.0.1:41919/bootstrap: SASL authentication error: Authentication "
    "failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 "
    "(after 338ms in state AUTH_REQ)"
)
SCRAM_REFUSED = (
    "Authentication failed during authentication due to invalid credentials with SASL "
    "mechanism SCRAM-SHA-512"
)


def query_failure(spark: SparkSession, text: str) -> StreamingQueryException:
    """The exception `StreamingQuery.awaitTermination` raises (it needs a running JVM)."""
    assert spark.sparkContext._jvm is not None
    return StreamingQueryException(desc=text, stackTrace="")


def kafka_failure(code: int, text: str | None = None) -> KafkaException:
    return KafkaException(KafkaError(code, text) if text else KafkaError(code))


def test_a_refused_login_of_spark_kafka_source(spark: SparkSession) -> None:
    ended = classify(query_failure(spark, SPARK_AUTHENTICATION), kafka_user="carstream-enrich")
    assert ended == Termination(
        "KafkaAuthenticationFailed",
        f"Kafka refused the login of user carstream-enrich: SaslAuthenticationException: "
        f"{SCRAM_REFUSED}",
    )
    assert ended.line().startswith("KafkaAuthenticationFailed: Kafka refused the login")
    assert ended.described


def test_a_refused_login_inside_a_py4j_error() -> None:
    try:
        try:
            raise RuntimeError(PY4J_AUTHENTICATION)
        except RuntimeError as java_error:
            raise ValueError("the stage stopped") from java_error
    except ValueError as error:
        ended = classify(error)
    assert ended.reason == "KafkaAuthenticationFailed"
    assert ended.message == (
        f"Kafka refused the login of the stage's user: SaslAuthenticationException: {SCRAM_REFUSED}"
    )


def test_a_refused_login_of_the_generator() -> None:
    error = kafka_failure(KafkaError._AUTHENTICATION, RDKAFKA_AUTHENTICATION)
    ended = classify(error, kafka_user="carstream-generate")
    assert ended.reason == "KafkaAuthenticationFailed"
    assert ended.message == (
        f"Kafka refused the login of user carstream-generate: _AUTHENTICATION: "
        f"{RDKAFKA_AUTHENTICATION}"
    )


def test_a_denied_topic_of_spark_and_of_the_generator(spark: SparkSession) -> None:
    ended = classify(query_failure(spark, SPARK_AUTHORIZATION), kafka_user="carstream-enrich")
    assert ended == Termination(
        "KafkaAuthorizationFailed",
        "Kafka denied user carstream-enrich what its ACLs do not allow: "
        "TopicAuthorizationException: Topic authorization failed.",
    )
    produce = kafka_failure(
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        "Unable to produce message: Broker: Topic authorization failed",
    )
    assert classify(produce, kafka_user="carstream-generate").message == (
        "Kafka denied user carstream-generate what its ACLs do not allow: "
        "TOPIC_AUTHORIZATION_FAILED: Unable to produce message: Broker: Topic authorization failed"
    )
    group = classify(kafka_failure(KafkaError.GROUP_AUTHORIZATION_FAILED))
    assert group.reason == "KafkaAuthorizationFailed"
    assert "GROUP_AUTHORIZATION_FAILED: Broker: Group authorization failed" in group.message


def test_a_refused_login_is_named_before_the_errors_that_follow_it() -> None:
    text = (
        "org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node "
        "assignment.\nCaused by: org.apache.kafka.common.errors.TopicAuthorizationException: "
        "Not authorized to access topics: [alert-data]\nCaused by: "
        f"org.apache.kafka.common.errors.SaslAuthenticationException: {SCRAM_REFUSED}"
    )
    assert classify(RuntimeError(text)).reason == "KafkaAuthenticationFailed"
    without_login = text.split("\nCaused by: org.apache.kafka.common.errors.Sasl")[0]
    denied = classify(RuntimeError(without_login))
    assert denied.reason == "KafkaAuthorizationFailed"
    assert denied.message.endswith(
        "TopicAuthorizationException: Not authorized to access topics: [alert-data]"
    )


def test_kafka_out_of_reach(spark: SparkSession) -> None:
    ended = classify(query_failure(spark, SPARK_UNREACHABLE))
    assert ended == Termination(
        "KafkaBrokerUnreachable",
        "Kafka did not answer within the client's timeouts: TimeoutException: Timed out "
        "waiting for a node assignment. Call: listNodes",
    )
    timed_out = classify(kafka_failure(KafkaError._MSG_TIMED_OUT, "Local: Message timed out"))
    assert timed_out.line() == (
        "KafkaBrokerUnreachable: Kafka did not answer within the client's timeouts: "
        "_MSG_TIMED_OUT: Local: Message timed out"
    )


def test_a_missing_dimension() -> None:
    missing = spark_io.DataMissing(
        "the car_models dimension is not at /data/dims/car_models: run `carstream stage dims` first"
    )
    assert classify(missing) == Termination("DimensionMissing", str(missing))
    cars = generate.CarsMissing("the cars dimension at /data/dims/cars has no rows")
    assert classify(cars).line() == (
        "DimensionMissing: the cars dimension at /data/dims/cars has no rows"
    )


def test_anything_else_is_its_class_and_first_line() -> None:
    ended = classify(ZeroDivisionError("division by zero\n  in the counter"))
    assert ended == Termination("StageError", "ZeroDivisionError: division by zero")
    assert not ended.described
    assert classify(KeyError()).line() == "StageError: KeyError"


def test_a_message_stays_one_short_line() -> None:
    ended = classify(RuntimeError("x" * 5000))
    assert len(ended.message) == termination.MAX_MESSAGE_CHARS
    assert ended.message.endswith("...")
    assert termination.one_line("a\n  b\tc SQLSTATE: 42K03") == "a b c"


def test_write_fills_the_file_kubernetes_made(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.write_text("left over from an earlier write, longer than the new one")
    assert termination.write(Termination("DimensionMissing", "no cars"), str(log))
    assert log.read_text() == "DimensionMissing: no cars"
    huge = Termination("StageError", "é" * 4000)
    assert termination.write(huge, str(log))
    assert len(log.read_bytes()) <= termination.MAX_BYTES


def test_write_creates_no_file_outside_kubernetes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = tmp_path / "absent"
    monkeypatch.setenv(termination.PATH_ENV, str(absent))
    assert termination.write(Termination("StageError", "x")) is False
    assert not absent.exists()
    assert termination.write(Termination("StageError", "x"), str(tmp_path)) is False  # a folder


@pytest.fixture
def termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty termination message file, as the kubelet makes it, named by the environment."""
    log = tmp_path / "termination-log"
    log.touch()
    monkeypatch.setenv(termination.PATH_ENV, str(log))
    return log


def test_carstream_stage_writes_the_reason_and_exits_1(
    termination_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["stage", "generate", "--warehouse", str(tmp_path / "nothing")])
    assert code == 1
    message = termination_log.read_text()
    assert message.startswith("DimensionMissing: cannot read the cars dimension at ")
    assert message.endswith("run `carstream stage dims` first")
    err = capsys.readouterr().err
    assert f"carstream stage generate: {message}" in err
    assert "Traceback" not in err


def test_an_unforeseen_failure_is_written_and_raised_again(
    termination_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def main(args: argparse.Namespace) -> NoReturn:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setenv("CARSTREAM_KAFKA_USERNAME", "carstream-count")
    handler = stages._handler("count", SimpleNamespace(main=main), argparse.ArgumentParser())  # type: ignore[arg-type]
    with pytest.raises(ZeroDivisionError):
        handler(argparse.Namespace())
    assert termination_log.read_text() == "StageError: ZeroDivisionError: division by zero"


def test_an_error_that_cannot_be_described_is_still_a_stage_error() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("the JVM is gone")

    assert classify(Unprintable()) == Termination(
        "StageError", "Unprintable (RuntimeError('the JVM is gone') describing it)"
    )


def test_storage_that_cannot_be_used() -> None:
    denied = StorageError(
        "s3a://data/warehouse/dims/cars: access denied to bucket 'data' while listing at AWS S3 "
        "(AccessDenied: Access Denied)"
    )
    assert classify(denied) == Termination("StorageUnusable", str(denied))
    spark_text = RuntimeError(
        "An error occurred while calling o42.parquet.\n: java.nio.file.AccessDeniedException: "
        "s3a://data/warehouse/dims/cars: getFileStatus on s3a://data/warehouse/dims/cars: "
        "AccessDenied\n\tat org.apache.hadoop.fs.s3a.S3AUtils.translateException(S3AUtils.java:1)"
    )
    assert classify(spark_text).line() == (
        "StorageUnusable: java.nio.file.AccessDeniedException: s3a://data/warehouse/dims/cars: "
        "getFileStatus on s3a://data/warehouse/dims/cars: AccessDenied"
    )
