"""The stages' positions as standard Kafka consumer groups, for any Kafka lag tool.

Spark's Kafka source keeps its offsets in the query's checkpoint and commits nothing to Kafka,
so `kafka-consumer-groups.sh --describe`, Burrow or a Kafka exporter see no group for a
running stage. After each micro-batch the stage commits the offsets it has processed to the
group `<pipeline>.<query>` (e.g. `carstream.enrich`, `carstream.count-dead-letters`), through
the Admin API: the group has no members, nothing consumes through it, and the checkpoint stays
the source of truth (a restart resumes from the checkpoint, not from the group).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient

from carstream.config import KafkaSettings
from carstream.kafka_admin import TopicAdmin, client_config

logger = logging.getLogger("carstream.consumer_groups")
COMMIT_TIMEOUT_SECONDS = 10.0

PartitionOffsets = dict[tuple[str, int], int]
"""Offset by (topic, partition)."""


def group_name(pipeline: str, query: str) -> str:
    return f"{pipeline}.{query}"


def parse_offsets(text: str | Mapping[str, Mapping[str, int]] | None) -> PartitionOffsets:
    """Spark's Kafka source offsets ('{"topic": {"0": 42, "1": 17}}') -> offset by partition.
    Sources that are not Kafka (or no offsets yet) give an empty mapping."""
    if text is None:
        return {}
    try:
        decoded = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    if not isinstance(decoded, Mapping):
        return {}
    offsets: PartitionOffsets = {}
    for topic, partitions in decoded.items():
        if not isinstance(partitions, Mapping):
            return {}
        for partition, offset in partitions.items():
            offsets[(str(topic), int(partition))] = int(offset)
    return offsets


@dataclass(frozen=True)
class GroupLag:
    group: str
    committed: PartitionOffsets
    end: PartitionOffsets

    @property
    def total(self) -> int:
        """Records behind the end over all partitions (a partition never committed counts
        from its start, as kafka-consumer-groups.sh shows it)."""
        return sum(end - self.committed.get(tp, 0) for tp, end in self.end.items())


class OffsetCommitter:
    """Commits processed offsets to each query's consumer group. A failure (the broker away,
    a missing ACL) is logged once per kind of error and never stops the stage."""

    def __init__(self, kafka: KafkaSettings, pipeline: str) -> None:
        self.pipeline = pipeline
        self._admin = AdminClient(client_config(kafka))
        self._warned: set[str] = set()

    def commit(self, query: str, offsets: PartitionOffsets) -> bool:
        if not offsets:
            return True
        group = group_name(self.pipeline, query)
        partitions = [KafkaPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        try:
            futures = self._admin.alter_consumer_group_offsets(
                request, request_timeout=COMMIT_TIMEOUT_SECONDS
            )
            for future in futures.values():
                future.result(timeout=COMMIT_TIMEOUT_SECONDS)
        except (KafkaException, TimeoutError) as error:
            kind = type(error).__name__ + (
                str(error.args[0].code()) if isinstance(error, KafkaException) else ""
            )
            if kind not in self._warned:
                self._warned.add(kind)
                logger.warning(
                    "could not commit %s's offsets to consumer group %s (lag tools will not "
                    "see them; the stage goes on): %s",
                    query,
                    group,
                    error,
                )
            return False
        return True


def group_lag(kafka: KafkaSettings, group: str, topics: Iterable[str]) -> GroupLag:
    """What a lag tool sees: the group's committed offsets and the topics' end offsets."""
    admin = AdminClient(client_config(kafka))
    request = [ConsumerGroupTopicPartitions(group)]
    committed: PartitionOffsets = {}
    for future in admin.list_consumer_group_offsets(request).values():
        for tp in future.result(timeout=COMMIT_TIMEOUT_SECONDS).topic_partitions:
            if tp.offset >= 0:
                committed[(tp.topic, tp.partition)] = tp.offset
    topic_admin = TopicAdmin(kafka)
    try:
        end = topic_admin.partition_end_offsets(topics)
    finally:
        topic_admin.close()
    return GroupLag(group, committed, end)
