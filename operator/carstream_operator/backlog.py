"""How far a stage is behind its input topic: what wakes a sleeping stage (spec.wake).

Unprocessed records are the topic's end offsets minus the offsets the stage has processed.
The processed offsets are read from the consumer groups the stage commits to after every
micro-batch (`<pipeline>.<query>`, jobs' consumer_groups module), not from its checkpoint:
the checkpoint is Spark's internal offset log on the stage's storage (S3 or a volume), which
the operator would need storage credentials and Spark's undocumented file format to read,
while the groups are Kafka's public interface, readable with a Kafka user that may only
describe. A group is committed right after its batch's checkpoint, so it is never ahead of
what was processed (a wake is never missed); it can be behind when a commit failed or a run
ended with no batch at all. For that the operator also keeps a floor: the end offsets it saw
when it started the last run that succeeded, which that availableNow run processed entirely.

The age of the oldest unprocessed record comes from ListOffsets by timestamp (the first
offset at or after a time), searched per partition to the second: record values are never
read, so the operator's Kafka user needs no Read on topics.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from carstream_operator.model import KafkaConnection, StageSpec
from carstream_operator.settings import Settings
from carstream_operator.wake import BacklogView

PartitionOffsets = dict[tuple[str, int], int]
"""Offset by (topic, partition)."""

# The topic each streaming job reads, by its `--topic-<role>` flag and the jobs' default name,
# and the queries that read it (each commits to the group <pipeline>.<query>).
JOB_INPUTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "enrich": ("sensors", "sensors-sample", ("enrich",)),
    "detect": ("enriched", "samples-enriched", ("detect",)),
    "count": ("alerts", "alert-data", ("count", "count-dead-letters")),
}

# How far back the oldest record's age is searched; an older one reports this age.
AGE_HORIZON_SECONDS = 30 * 24 * 3600
REQUEST_TIMEOUT_SECONDS = 10.0
# A retriable error (a group coordinator still loading, a leader moving) is asked again this
# often until REQUEST_TIMEOUT_SECONDS have passed.
RETRY_SECONDS = 0.5

# Errors of a broker that is starting or moving leaders, which librdkafka's admin results do
# not all flag as retriable.
RETRIABLE = frozenset(
    {
        "COORDINATOR_LOAD_IN_PROGRESS",
        "NOT_COORDINATOR",
        "COORDINATOR_NOT_AVAILABLE",
        "NOT_LEADER_FOR_PARTITION",
        "LEADER_NOT_AVAILABLE",
    }
)
T = TypeVar("T")


class BacklogError(Exception):
    """Kafka could not tell the backlog (unreachable, not authorized, no such topic)."""


@dataclass(frozen=True)
class StageInput:
    topic: str
    groups: tuple[str, ...]


def stage_input(spec: StageSpec) -> StageInput | None:
    """The topic a streaming stage reads and its groups; None for a job the operator does not
    know (its backlog cannot be told)."""
    known = JOB_INPUTS.get(spec.job)
    if known is None:
        return None
    role, default_topic, queries = known
    topic = _flag_value(spec.args, f"--topic-{role}") or default_topic
    return StageInput(topic, tuple(f"{spec.pipeline}.{query}" for query in queries))


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The last value of FLAG in ARGS (`--flag=value` or `--flag value`), as argparse reads it."""
    value = None
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class Backlog:
    records: int
    # Seconds the oldest unprocessed record has waited (by its Kafka timestamp); None: none.
    oldest_age_seconds: float | None
    end_offsets: PartitionOffsets


def processed_offsets(
    end: PartitionOffsets,
    start: PartitionOffsets,
    groups: Sequence[PartitionOffsets],
    floor: PartitionOffsets,
) -> PartitionOffsets:
    """Where the stage stands in each partition: the least of its groups (a partition a group
    never committed counts from the partition's start), never below FLOOR, never past the end."""
    processed: PartitionOffsets = {}
    for tp, end_offset in end.items():
        first = start.get(tp, 0)
        position = min((group.get(tp, first) for group in groups), default=first)
        processed[tp] = min(max(position, floor.get(tp, first), first), end_offset)
    return processed


def unprocessed_records(end: PartitionOffsets, processed: PartitionOffsets) -> int:
    return sum(end_offset - processed.get(tp, 0) for tp, end_offset in end.items())


def offsets_key(tp: tuple[str, int]) -> str:
    """A partition as status keys it: `topic/partition`."""
    return f"{tp[0]}/{tp[1]}"


_KEY = re.compile(r"^(?P<topic>.+)/(?P<partition>\d+)$")


def offsets_from_status(data: Mapping[str, Any] | None) -> PartitionOffsets:
    offsets: PartitionOffsets = {}
    for key, value in (data or {}).items():
        match = _KEY.match(str(key))
        if match and isinstance(value, int):
            offsets[(match["topic"], int(match["partition"]))] = value
    return offsets


def offsets_to_status(offsets: PartitionOffsets) -> dict[str, int]:
    return {offsets_key(tp): offset for tp, offset in sorted(offsets.items())}


@dataclass(frozen=True)
class OperatorKafkaLogin:
    """The operator's own Kafka user (SASL), from its settings; None of it: no SASL login."""

    username: str
    password: str


def client_config(
    connection: KafkaConnection, login: OperatorKafkaLogin | None, ca_file: str | None
) -> dict[str, Any]:
    """librdkafka settings to reach the stage's Kafka as the operator: the stage's bootstrap
    servers and security protocol, the operator's own user and CA file."""
    config: dict[str, Any] = {
        "bootstrap.servers": connection.bootstrap_servers,
        "security.protocol": connection.security_protocol,
        "socket.timeout.ms": int(REQUEST_TIMEOUT_SECONDS * 1000),
    }
    if connection.sasl_mechanism and login is not None:
        config["sasl.mechanism"] = connection.sasl_mechanism
        config["sasl.username"] = login.username
        config["sasl.password"] = login.password
    if ca_file and connection.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl.ca.location"] = ca_file
    return config


class BacklogReader:
    """Reads stages' backlogs from one Kafka cluster with describe-only rights."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._admin = AdminClient(self._config)

    def read(self, stage: StageInput, floor: PartitionOffsets, now: datetime) -> Backlog:
        try:
            partitions = self._partitions(stage.topic)
            end = _retrying(lambda: self._offsets(partitions, OffsetSpec.latest()))
            start = _retrying(lambda: self._offsets(partitions, OffsetSpec.earliest()))
            groups = [self._committed(group, partitions) for group in stage.groups]
            processed = processed_offsets(end, start, groups, floor)
            records = unprocessed_records(end, processed)
            oldest = self._oldest_age(end, processed, now) if records else None
        except KafkaException as error:
            raise BacklogError(_describe(error)) from None
        except TimeoutError:
            raise BacklogError(f"no answer from Kafka in {REQUEST_TIMEOUT_SECONDS:g}s") from None
        return Backlog(records, oldest, end)

    def _partitions(self, topic: str) -> list[tuple[str, int]]:
        # all topics: a metadata request naming a missing topic may have the broker create it
        metadata = self._admin.list_topics(timeout=REQUEST_TIMEOUT_SECONDS)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            reason = described.error.str() if described and described.error else "not found"
            raise BacklogError(f"topic {topic}: {reason}")
        return [(topic, partition) for partition in sorted(described.partitions)]

    def _offsets(self, partitions: Iterable[tuple[str, int]], spec: OffsetSpec) -> PartitionOffsets:
        request = {TopicPartition(topic, partition): spec for topic, partition in partitions}
        if not request:
            return {}
        futures = self._admin.list_offsets(request, request_timeout=REQUEST_TIMEOUT_SECONDS)
        offsets: PartitionOffsets = {}
        for tp, future in futures.items():
            offsets[(tp.topic, tp.partition)] = future.result(
                timeout=REQUEST_TIMEOUT_SECONDS
            ).offset
        return offsets

    def _committed(self, group: str, partitions: Sequence[tuple[str, int]]) -> PartitionOffsets:
        return _retrying(lambda: self._committed_once(group, partitions))

    def _committed_once(
        self, group: str, partitions: Sequence[tuple[str, int]]
    ) -> PartitionOffsets:
        """The group's committed offsets, through a consumer of the group that never joins it
        (an OffsetFetch, which needs Describe on the group and the topic). Not the admin
        client's ListConsumerGroupOffsets: librdkafka 2.16 crashes (NULL consumer-group
        handle in rd_kafka_cgrp_op) when that call meets a coordinator still loading."""
        consumer = Consumer({**self._config, "group.id": group, "enable.auto.commit": False})
        try:
            found = consumer.committed(
                [TopicPartition(topic, partition) for topic, partition in partitions],
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except KafkaException as error:
            if _code_name(error) == "_TIMED_OUT":
                self._explain_timeout(group)
            raise
        finally:
            consumer.close()
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def _explain_timeout(self, group: str) -> None:
        """The consumer only times out when the group is not authorized (librdkafka retries
        its coordinator lookup); DescribeGroups says why, which is what the status should."""
        (future,) = self._admin.describe_consumer_groups(
            [group], request_timeout=REQUEST_TIMEOUT_SECONDS
        ).values()
        future.result(timeout=REQUEST_TIMEOUT_SECONDS)  # raises GROUP_AUTHORIZATION_FAILED

    def _oldest_age(
        self, end: PartitionOffsets, processed: PartitionOffsets, now: datetime
    ) -> float:
        """The age of the oldest unprocessed record: for each partition behind, the latest
        second T at which the first record at or after T is still unprocessed, by bisection
        over [now - AGE_HORIZON_SECONDS, now], all partitions in one request per step."""
        behind = [tp for tp, offset in end.items() if processed[tp] < offset]
        now_ms = int(now.timestamp() * 1000)
        low = {tp: now_ms - AGE_HORIZON_SECONDS * 1000 for tp in behind}
        high = {tp: now_ms for tp in behind}
        while any(high[tp] - low[tp] > 1000 for tp in behind):
            middle = {tp: (low[tp] + high[tp]) // 2 for tp in behind}
            found = self._offsets_at(middle)
            for tp in behind:
                # offset -1: no record at or after that time, so every unprocessed one is older
                first = found[tp]
                if first != -1 and first <= processed[tp]:
                    low[tp] = middle[tp]  # the next unprocessed record is at or after middle
                else:
                    high[tp] = middle[tp]
        oldest_ms = min(low.values())
        return max(now_ms - oldest_ms, 0) / 1000

    def _offsets_at(self, times_ms: Mapping[tuple[str, int], int]) -> PartitionOffsets:
        request = {
            TopicPartition(topic, partition): OffsetSpec.for_timestamp(time_ms)
            for (topic, partition), time_ms in times_ms.items()
        }
        futures = self._admin.list_offsets(request, request_timeout=REQUEST_TIMEOUT_SECONDS)
        return {
            (tp.topic, tp.partition): future.result(timeout=REQUEST_TIMEOUT_SECONDS).offset
            for tp, future in futures.items()
        }


def _retrying(call: Callable[[], T]) -> T:
    deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
    while True:
        try:
            return call()
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            retriable = kafka_error is not None and (
                kafka_error.retriable() or kafka_error.name() in RETRIABLE
            )
            if not retriable or time.monotonic() + RETRY_SECONDS > deadline:
                raise
        time.sleep(RETRY_SECONDS)


def _code_name(error: KafkaException) -> str:
    kafka_error = error.args[0] if error.args else None
    return (
        str(kafka_error.name()) if kafka_error is not None and hasattr(kafka_error, "name") else ""
    )


def _describe(error: KafkaException) -> str:
    kafka_error = error.args[0] if error.args else None
    if kafka_error is not None and hasattr(kafka_error, "str"):
        return f"{kafka_error.name()}: {kafka_error.str()}"
    return str(error)


class BacklogReaders:
    """One BacklogReader per Kafka cluster, protocol and login the stages use, as the
    operator's own user (Settings.kafka_*). The password file (a mounted Secret) is read at
    every look, so a Secret created or rotated after the operator started is picked up.
    Reads block: callers run them in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._readers: dict[tuple[str, ...], BacklogReader] = {}

    def login(self) -> OperatorKafkaLogin | None:
        settings = self.settings
        if not settings.kafka_username:
            return None
        password = settings.kafka_password
        if settings.kafka_password_file:
            with contextlib.suppress(OSError):
                password = Path(settings.kafka_password_file).read_text().strip()
        return OperatorKafkaLogin(settings.kafka_username, password)

    def read(
        self, spec: StageSpec, floor: PartitionOffsets, now: datetime
    ) -> tuple[BacklogView | None, str | None]:
        """The stage's backlog as the decision takes it, or why it cannot be told."""
        stage = stage_input(spec)
        if stage is None:
            return None, f"the operator does not know the input topic of job {spec.job}"
        kafka, login = spec.kafka, self.login()
        key = (
            kafka.bootstrap_servers,
            kafka.security_protocol,
            kafka.sasl_mechanism or "",
            *((login.username, login.password) if login else ()),
        )
        reader = self._readers.get(key)
        if reader is None:
            ca_file = self.settings.kafka_ca_file or None
            reader = BacklogReader(client_config(kafka, login, ca_file))
            self._readers = {key: reader}  # what an older password opened is dropped
        try:
            seen = reader.read(stage, floor, now)
        except BacklogError as error:
            return None, str(error)
        view = BacklogView(
            seen.records, seen.oldest_age_seconds, offsets_to_status(seen.end_offsets)
        )
        return view, None
