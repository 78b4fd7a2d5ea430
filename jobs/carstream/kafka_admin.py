"""Kafka administration with confluent-kafka: creating topics, reading their end offsets, and
reading a topic from its start to its current end (for checks, tests and benchmarks)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from carstream.config import KafkaSettings

DEFAULT_PARTITIONS = 2
_LEADERSHIP_SETTLING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
CLIENT_LOGGER = logging.getLogger("carstream.kafka")
"""Where librdkafka's own log lines go (instead of straight to stderr)."""


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings for `kafka`, logging through CLIENT_LOGGER."""
    return {**kafka.client_config(), "logger": CLIENT_LOGGER}


class TopicAdmin:
    """Topics of one Kafka cluster: create them, count what they hold."""

    def __init__(self, kafka: KafkaSettings, timeout: float = 30.0) -> None:
        self.kafka = kafka
        self.timeout = timeout
        self._client: AdminClient | None = AdminClient(client_config(kafka))
        self._partitions: dict[str, list[int]] = {}

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            raise RuntimeError("the TopicAdmin is closed")
        return self._client

    def close(self) -> None:
        """Drops the connection (before the broker goes away, to keep its logs quiet)."""
        self._client = None

    def create_topics(
        self,
        names: Iterable[str],
        *,
        partitions: int = DEFAULT_PARTITIONS,
        replication_factor: int = 1,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        """Creates the topics that do not exist yet; returns the names it created."""
        wanted = list(dict.fromkeys(names))
        existing = set(self.client.list_topics(timeout=self.timeout).topics)
        new = [
            NewTopic(name, partitions, replication_factor, config=dict(config or {}))
            for name in wanted
            if name not in existing
        ]
        if not new:
            return []
        created = []
        futures = self.client.create_topics(new, operation_timeout=self.timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=self.timeout)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            else:
                created.append(name)
        self._wait_for_leaders([topic.topic for topic in new])
        return created

    def delete_topics(self, names: Sequence[str]) -> None:
        futures = self.client.delete_topics(list(names), operation_timeout=self.timeout)
        for future in futures.values():
            try:
                future.result(timeout=self.timeout)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        for name in names:
            self._partitions.pop(name, None)

    def partitions(self, topic: str) -> list[int]:
        """The partition numbers of a topic ([] if it does not exist)."""
        known = self._partitions.get(topic)
        if known:
            return known
        metadata = self.client.list_topics(topic, timeout=self.timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        found = sorted(metadata.partitions)
        self._partitions[topic] = found
        return found

    def end_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Per topic, the sum of its partitions' end offsets: how many records were ever
        written to it (compaction and retention aside). A missing topic counts 0."""
        names = list(topics)
        totals = dict.fromkeys(names, 0)
        for (topic, _), offset in self.partition_end_offsets(names).items():
            totals[topic] += offset
        return totals

    def partition_end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """The end offset of every partition of `topics` (missing topics have none).

        Retriable errors (a partition whose leader is still being settled, e.g. just after the
        topic was created) are retried for up to `timeout` seconds."""
        names = list(topics)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self._partition_end_offsets(names)
            except KafkaException as error:
                kafka_error = error.args[0]
                settling = kafka_error.retriable() or kafka_error.code() in _LEADERSHIP_SETTLING
                if not settling or time.monotonic() > deadline:
                    raise
                self._partitions.clear()
                time.sleep(0.2)

    def _partition_end_offsets(self, names: Sequence[str]) -> dict[tuple[str, int], int]:
        request = {
            KafkaPartition(topic, partition): OffsetSpec.latest()
            for topic in names
            for partition in self.partitions(topic)
        }
        if not request:
            return {}
        futures = self.client.list_offsets(request, request_timeout=self.timeout)
        return {
            (partition.topic, partition.partition): future.result().offset
            for partition, future in futures.items()
        }

    def _wait_for_leaders(self, names: Sequence[str]) -> None:
        """Topic creation returns before every partition has a leader; wait for them."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            topics = self.client.list_topics(timeout=self.timeout).topics
            if all(
                name in topics
                and topics[name].error is None
                and topics[name].partitions
                and all(p.leader >= 0 for p in topics[name].partitions.values())
                for name in names
            ):
                return
            time.sleep(0.1)
        raise KafkaException(f"topics {', '.join(names)} have no leader after {self.timeout} s")


def read_to_end(
    kafka: KafkaSettings, topic: str, *, timeout: float = 60.0, batch: int = 10_000
) -> list[Message]:
    """Every record of `topic` from its first offset to the end offsets it has now, ordered by
    partition and offset; never creates the topic. The consumer group (which commits nothing)
    starts with the SASL user's name, the group prefix a user's ACLs usually allow (the
    chart's viewer's do)."""
    admin = TopicAdmin(kafka, timeout=timeout)
    try:
        # Asking for one topic's metadata makes a broker with auto.create.topics.enable (the
        # embedded one) create it: look for it among all topics.
        if topic not in admin.client.list_topics(timeout=timeout).topics:
            raise KafkaException(f"topic {topic} does not exist")
        # Waits until every partition has a leader (a new topic's may still be settling).
        partitions = sorted(p for _, p in admin.partition_end_offsets([topic]))
    finally:
        admin.close()
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": f"{kafka.username or 'carstream'}-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                KafkaPartition(topic, partition), timeout=timeout
            )
            starts[partition], ends[partition] = low, high
        pending = {p for p in partitions if ends[p] > starts[p]}
        consumer.assign([KafkaPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        records: dict[int, list[Message]] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {sum(map(len, records.values()))} records of {topic} in "
                    f"{timeout:.0f} s; partitions {sorted(pending)} not at their end yet"
                )
            for message in consumer.consume(batch, timeout=0.5):
                error = message.error()
                if error is not None:
                    raise KafkaException(error)
                number, offset = message.partition(), message.offset()
                if number is None or offset is None:
                    continue
                if number in pending and offset < ends[number]:
                    records[number].append(message)
                    if offset + 1 >= ends[number]:
                        pending.discard(number)
        return [message for p in partitions for message in records[p]]
    finally:
        consumer.close()
