"""The operator's backlog reader against a real broker: end offsets, the stages' consumer
groups, the floor, the oldest record's age by timestamp, and a broker that cannot be reached."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from carstream.config import KafkaSettings, Topics
from carstream.consumer_groups import OffsetCommitter
from carstream.kafka_admin import client_config
from carstream_operator import backlog
from carstream_operator.model import KafkaConnection
from tests.fixtures.kube import free_ports


def reader(kafka: KafkaSettings) -> backlog.BacklogReader:
    connection = KafkaConnection(bootstrap_servers=kafka.bootstrap_servers)
    return backlog.BacklogReader(backlog.client_config(connection, None, None))


def produce_at(kafka: KafkaSettings, topic: str, partition: int, count: int, at_ms: int) -> None:
    """COUNT records into one partition, stamped AT_MS (the producer's CreateTime)."""
    producer = Producer(client_config(kafka))
    for index in range(count):
        producer.produce(topic, b"{}", str(index).encode(), partition=partition, timestamp=at_ms)
    assert producer.flush(30) == 0


def test_a_new_stage_is_behind_by_everything_and_as_old_as_its_first_record(
    kafka: KafkaSettings, topics: Topics
) -> None:
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    produce_at(kafka, topics.sensors, 0, 3, now_ms - 120_000)
    produce_at(kafka, topics.sensors, 1, 2, now_ms - 10_000)
    stage = backlog.StageInput(topics.sensors, ("p.enrich",))

    seen = reader(kafka).read(stage, {}, now)

    assert seen.records == 5
    assert seen.oldest_age_seconds == pytest.approx(120, abs=1.5)
    assert seen.end_offsets == {(topics.sensors, 0): 3, (topics.sensors, 1): 2}


def test_committed_groups_and_the_floor_count_as_processed(
    kafka: KafkaSettings, topics: Topics
) -> None:
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    produce_at(kafka, topics.alerts, 0, 4, now_ms - 300_000)
    produce_at(kafka, topics.alerts, 0, 2, now_ms - 30_000)
    produce_at(kafka, topics.alerts, 1, 5, now_ms - 60_000)
    committer = OffsetCommitter(kafka, "p")
    assert committer.commit("count", {(topics.alerts, 0): 6, (topics.alerts, 1): 5})
    assert committer.commit("count-dead-letters", {(topics.alerts, 0): 4})
    stage = backlog.StageInput(topics.alerts, ("p.count", "p.count-dead-letters"))
    read = reader(kafka)

    # count-dead-letters never committed partition 1: it is behind by all 5 there
    behind = read.read(stage, {}, now)
    assert behind.records == 2 + 5
    assert behind.oldest_age_seconds == pytest.approx(60, abs=1.5)

    # the last successful run started when partition 1 ended at 5: nothing left there
    floor = {(topics.alerts, 1): 5}
    assert read.read(stage, floor, now).oldest_age_seconds == pytest.approx(30, abs=1.5)
    committer.commit("count-dead-letters", {(topics.alerts, 0): 6, (topics.alerts, 1): 5})
    drained = read.read(stage, {}, now)
    assert (drained.records, drained.oldest_age_seconds) == (0, None)


def test_a_missing_topic_is_a_backlog_error(kafka: KafkaSettings) -> None:
    stage = backlog.StageInput("no-such-topic-for-backlog", ("p.enrich",))
    with pytest.raises(backlog.BacklogError, match="no-such-topic-for-backlog"):
        reader(kafka).read(stage, {}, datetime.now(UTC))


def test_an_unreachable_broker_is_a_backlog_error() -> None:
    (port,) = free_ports(1)
    stage = backlog.StageInput("sensors", ("p.enrich",))
    started = time.monotonic()
    with pytest.raises(backlog.BacklogError):
        reader(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")).read(
            stage, {}, datetime.now(UTC)
        )
    assert time.monotonic() - started < 3 * backlog.REQUEST_TIMEOUT_SECONDS
