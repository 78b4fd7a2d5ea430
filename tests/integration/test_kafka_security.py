"""The chart's standalone Kafka on a real broker: SCRAM-SHA-512 logins, the StandardAuthorizer,
and `carstream kafka-setup` applying the plan that the chart renders from its values.

Every client here is a real Kafka client: confluent-kafka (librdkafka) for the checks, and
Spark's Kafka source and sink (the Java client) for a stage run as its own user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from pyspark.sql import SparkSession

from carstream.broker import EmbeddedBroker
from carstream.config import (
    DimsSettings,
    GeneratorSettings,
    KafkaSettings,
    StorageSettings,
    StreamSettings,
    Topics,
)
from carstream.consumer_groups import OffsetCommitter
from carstream.kafka_admin import client_config, read_to_end
from carstream.kafka_setup import login_outcome, principal_filter
from carstream.stages import dims, enrich, generate
from carstream.stages.streaming import StreamJob
from carstream_operator.backlog import (
    BacklogError,
    BacklogReader,
    OperatorKafkaLogin,
    StageInput,
)
from carstream_operator.backlog import client_config as backlog_client_config
from carstream_operator.model import KafkaConnection
from tests.chart import helm
from tests.fixtures.kafka import (
    ADMIN_USER,
    admin_login,
    end_offsets,
    produce,
    produce_outcome,
)
from tests.integration.kafka_users import Setup, apply_chart_plan

TOPICS = Topics()  # the chart's default topic names are the pipeline's defaults
GROUP_PREFIX = "spark-kafka-source-"


@pytest.fixture(scope="module")
def setup(secured_kafka_broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The chart's plan applied once to this module's secured broker."""
    return apply_chart_plan(secured_kafka_broker, tmp_path_factory.mktemp("kafka-setup"))


def admin_client(setup: Setup) -> AdminClient:
    return AdminClient(client_config(admin_login(setup.broker)))


def test_setup_creates_the_topics_users_and_exactly_the_planned_acls(setup: Setup) -> None:
    output = setup.first_output
    for user in setup.plan.users:
        assert f"user {user.name}: created (SCRAM-SHA-512)" in output
    assert "topic sensors-sample: created, 3 partitions" in output
    # Each reading stage: Read+Describe on its topic, Read on the Spark source group prefix and
    # Read+Describe on its <pipeline>. groups (lag commits); the operator Describe on the three
    # topics stages read and on those groups.
    assert "as planned: 5 topics, 6 users, 44 ACLs" in output

    admin = admin_client(setup)
    for user in setup.plan.users:
        listed = admin.describe_acls(principal_filter(user.principal)).result(timeout=30)
        assert set(listed) == user.acl_bindings(), user.name
    topics = admin.list_topics(timeout=30).topics
    for topic in setup.plan.topics:
        assert len(topics[topic.name].partitions) == topic.partitions
    resource = ConfigResource(ResourceType.TOPIC, TOPICS.sensors)
    (future,) = admin.describe_configs([resource]).values()
    assert future.result(timeout=30)["retention.ms"].value == "86400000"


def test_running_setup_again_changes_nothing(setup: Setup) -> None:
    again = setup.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [
        "carstream kafka-setup: no change; as planned: 5 topics, 6 users, 44 ACLs"
    ]


def test_each_stage_user_reads_and_writes_its_own_topics(setup: Setup) -> None:
    produce(setup.login("generate"), TOPICS.sensors, [(b"car-1", b'{"speed": 10}')])
    enrich_user = setup.login("enrich")
    records = _consume(enrich_user, TOPICS.sensors, f"{GROUP_PREFIX}{uuid.uuid4()}")
    assert [record.value() for record in records] == [b'{"speed": 10}']
    produce(enrich_user, TOPICS.enriched, [(b"car-1", b'{"speed": 10, "model": "X"}')])
    produce(enrich_user, TOPICS.dlq, [(b"junk", b"not json")])
    viewer = setup.login("viewer")
    # The viewer's groups start with its own name (the chart's KafkaUser ACL).
    read = _consume(viewer, TOPICS.enriched, f"carstream-viewer-{uuid.uuid4()}")
    assert [record.value() for record in read] == [b'{"speed": 10, "model": "X"}']
    # carstream's own reader (what the end-to-end checks read topics with) too.
    assert [m.value() for m in read_to_end(viewer, TOPICS.enriched)] == [
        b'{"speed": 10, "model": "X"}'
    ]


def test_a_topic_outside_the_users_acls_is_refused(setup: Setup) -> None:
    _, failures = produce_outcome(setup.login("generate"), TOPICS.alerts, [(b"k", b"v")])
    assert [f.code() for f in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert "Topic authorization failed" in failures[0].str()

    _, failures = produce_outcome(setup.login("viewer"), TOPICS.sensors, [(b"k", b"v")])
    assert [f.code() for f in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    with pytest.raises(KafkaException) as refused:
        _consume(setup.login("enrich"), TOPICS.alerts, f"{GROUP_PREFIX}{uuid.uuid4()}")
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    with pytest.raises(KafkaException) as refused:
        _consume(setup.login("enrich"), TOPICS.sensors, f"not-spark-{uuid.uuid4()}")
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED

    viewer = AdminClient(client_config(setup.login("viewer")))
    (future,) = viewer.create_topics([NewTopic("made-by-viewer", 1, 1)]).values()
    with pytest.raises(KafkaException) as refused:
        future.result(timeout=30)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_operator_reads_backlogs_but_no_record_and_writes_nothing(setup: Setup) -> None:
    produce(setup.login("generate"), TOPICS.sensors, [(b"car-2", b'{"speed": 20}')] * 3)
    enrich = setup.login("enrich")
    committer = OffsetCommitter(enrich, "carstream")
    assert committer.commit("enrich", {(TOPICS.sensors, 0): 0})
    operator = setup.login("operator")
    connection = KafkaConnection(
        bootstrap_servers=operator.bootstrap_servers,
        security_protocol=operator.security_protocol,
        sasl_mechanism=operator.sasl_mechanism,
    )
    login = OperatorKafkaLogin(operator.username or "", operator.password or "")
    reader = BacklogReader(backlog_client_config(connection, login, None))
    stage = StageInput(TOPICS.sensors, ("carstream.enrich",))
    seen = reader.read(stage, {}, datetime.now(UTC))
    assert seen.records >= 3 and seen.oldest_age_seconds is not None

    consumer = Consumer({**client_config(operator), "group.id": "carstream.enrich"})
    try:
        consumer.assign([TopicPartition(TOPICS.sensors, p, 0) for p in range(3)])
        message = consumer.poll(15)
    finally:
        consumer.close()
    assert message is not None and message.error() is not None, "no record may be read"
    assert message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _, failures = produce_outcome(operator, TOPICS.sensors, [(b"k", b"v")])
    assert [f.code() for f in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    with pytest.raises(BacklogError, match="GROUP_AUTHORIZATION_FAILED"):
        reader.read(StageInput(TOPICS.sensors, ("someone-elses.group",)), {}, datetime.now(UTC))


def test_a_wrong_password_is_an_authentication_error(setup: Setup) -> None:
    assert login_outcome(setup.login("enrich"), timeout=15) is True
    assert login_outcome(setup.login("enrich", password="wrong"), timeout=15) is False
    errors: list[KafkaError] = []
    producer = Producer(
        {**client_config(setup.login("generate", password="wrong")), "error_cb": errors.append}
    )
    producer.produce(TOPICS.sensors, b"v")
    producer.flush(3)
    assert KafkaError._AUTHENTICATION in {error.code() for error in errors}
    assert any("invalid credentials" in error.str() for error in errors)


def test_a_new_password_and_a_removed_user_converge(setup: Setup) -> None:
    extra = {
        "name": "carstream-extra",
        "acls": [
            {
                "resource": {"type": "topic", "name": TOPICS.counts, "patternType": "literal"},
                "operations": ["Read", "Describe"],
            }
        ],
    }
    with_extra = {**setup.document, "users": [*setup.document["users"], extra]}
    (setup.passwords / "carstream-extra").write_text("first-password")
    added = setup.run(with_extra)
    assert added.returncode == 0, added.stderr
    assert "user carstream-extra: created (SCRAM-SHA-512)" in added.stdout
    assert "carstream kafka-setup: 3 changes;" in added.stdout  # the user and two ACLs

    (setup.passwords / "carstream-extra").write_text("second-password")
    changed = setup.run(with_extra)
    assert "user carstream-extra: password changed (SCRAM-SHA-512)" in changed.stdout
    assert "carstream kafka-setup: 1 changes;" in changed.stdout
    assert login_outcome(setup.login("extra", "second-password"), timeout=15) is True
    assert login_outcome(setup.login("extra", "first-password"), timeout=15) is False

    removed = setup.run()
    assert removed.returncode == 0, removed.stderr
    assert "user carstream-extra: removed (not in the plan)" in removed.stdout
    assert "ACL User:carstream-extra ALLOW READ on topic alert-counts (LITERAL): removed" in (
        removed.stdout
    )
    assert login_outcome(setup.login("extra", "second-password"), timeout=15) is False
    admin = admin_client(setup)
    assert admin.describe_acls(principal_filter("User:carstream-extra")).result(timeout=30) == []


def test_topic_changes_converge_and_what_kafka_cannot_do_is_reported(setup: Setup) -> None:
    def with_scratch(partitions: int, retention_ms: int) -> dict[str, Any]:
        scratch = {
            "topicName": "scratch",
            "partitions": partitions,
            "replicas": 1,
            "config": {"retention.ms": retention_ms},
        }
        return {**setup.document, "topics": [*setup.document["topics"], scratch]}

    created = setup.run(with_scratch(1, 60000))
    assert "topic scratch: created, 1 partitions" in created.stdout
    grown = setup.run(with_scratch(2, 120000))
    assert grown.returncode == 0, grown.stderr
    assert "topic scratch: partitions 1 -> 2" in grown.stdout
    assert "topic scratch: retention.ms 60000 -> 120000" in grown.stdout
    assert "carstream kafka-setup: 2 changes;" in grown.stdout

    shrunk = setup.run(with_scratch(1, 120000))
    assert shrunk.returncode == 1
    assert (
        "cannot apply: topic scratch: has 2 partitions, the plan says 1; Kafka cannot "
        "remove partitions" in shrunk.stderr
    )
    assert "no change; 1 not applicable" in shrunk.stdout


def test_a_wrong_admin_password_stops_setup_at_once(setup: Setup) -> None:
    # The plan is read first: a missing plan is a usage error, before any connection.
    missing = setup.run(plan_file=setup.folder / "missing.yaml", admin_password="nope")
    assert missing.returncode == 2
    assert "cannot read the plan" in missing.stderr
    empty = setup.folder / "empty.yaml"
    empty.write_text("topics: []\n")
    refused = setup.run(plan_file=empty, admin_password="nope")
    assert refused.returncode == 1
    assert f"refuses the admin {ADMIN_USER}" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_helm_test_script_reads_offsets_as_the_viewer(setup: Setup) -> None:
    admin = admin_login(setup.broker)
    for topic in (TOPICS.sensors, TOPICS.enriched, TOPICS.alerts, TOPICS.counts):
        produce(admin, topic, [(b"k", b"v")])
    viewer = setup.login("viewer")
    env = {
        **os.environ,
        "CARSTREAM_BOOTSTRAP_SERVERS": viewer.bootstrap_servers,
        "CARSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CARSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CARSTREAM_KAFKA_USERNAME": "carstream-viewer",
        "CARSTREAM_KAFKA_PASSWORD": setup.password("carstream-viewer"),
    }
    script = helm.CHART / "files" / "check_topics.py"
    watched = [TOPICS.sensors, TOPICS.enriched, TOPICS.alerts, TOPICS.counts]
    result = subprocess.run(
        [sys.executable, str(script), "--timeout", "30", *watched],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alert-counts=" in result.stdout


def test_spark_stages_run_as_their_users_and_are_refused_other_topics(
    setup: Setup, spark: SparkSession, tmp_path: Path
) -> None:
    """The Java client (Spark's Kafka source and sink) with SCRAM, through enrich's ACLs."""
    storage = StorageSettings(warehouse=str(tmp_path / "warehouse"))
    dims.run(spark, DimsSettings(num_cars=5, seed=3), storage)
    before = end_offsets(admin_login(setup.broker), [TOPICS.enriched])[TOPICS.enriched]
    report = generate.run(
        setup.login("generate"),
        TOPICS,
        GeneratorSettings(rate=200, max_events=50, seed=3),
        generate.read_car_ids(storage),
    )
    assert (report.sent, report.failed) == (50, 0)

    stream = StreamSettings(
        checkpoint_location=str(tmp_path / "checkpoints" / "enrich"), trigger="availableNow"
    )
    enrich.run(spark, StreamJob(kafka=setup.login("enrich"), topics=TOPICS, stream=stream), storage)
    after = end_offsets(admin_login(setup.broker), [TOPICS.enriched])[TOPICS.enriched]
    assert after - before == 50

    forbidden = StreamSettings(
        checkpoint_location=str(tmp_path / "checkpoints" / "forbidden"), trigger="availableNow"
    )
    other_topics = replace(TOPICS, sensors=TOPICS.alerts)
    with pytest.raises(Exception) as refused:
        enrich.run(
            spark,
            StreamJob(kafka=setup.login("enrich"), topics=other_topics, stream=forbidden),
            storage,
        )
    assert "TopicAuthorizationException" in str(refused.value), str(refused.value)[:2000]


def _consume(kafka: KafkaSettings, topic: str, group: str) -> list[Any]:
    """Subscribes with `group`, reads what `topic` holds; Kafka errors are raised."""
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.subscribe([topic])
        records, ended = [], 0
        partitions = None
        for _ in range(60):
            for message in consumer.consume(100, timeout=0.5):
                error = message.error()
                if error is None:
                    records.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ended += 1
                else:
                    raise KafkaException(error)
            partitions = partitions or consumer.assignment()
            if partitions and ended >= len(partitions):
                return records
        raise AssertionError(f"{topic} was not read to its end with group {group}")
    finally:
        consumer.close()
