"""`helm test`: wait until every named Kafka topic holds at least one record.

Reads offsets only (the Describe ACL of a read-only user is enough), never records. Kafka
settings come from the same environment variables the stages use:
CARSTREAM_BOOTSTRAP_SERVERS, CARSTREAM_KAFKA_SECURITY_PROTOCOL, CARSTREAM_KAFKA_SASL_MECHANISM,
CARSTREAM_KAFKA_CA_FILE, CARSTREAM_KAFKA_USERNAME, CARSTREAM_KAFKA_PASSWORD.

    python check_topics.py [--timeout SECONDS] TOPIC [TOPIC...]

Exit status 0 when all topics have data before the timeout, 1 when some stay empty, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

POLL_SECONDS = 5.0


def client_config(env: Mapping[str, str]) -> dict[str, str | int | float | bool]:
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": env.get("CARSTREAM_BOOTSTRAP_SERVERS", "localhost:9092"),
        "security.protocol": env.get("CARSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
    }
    optional = {
        "sasl.mechanism": "CARSTREAM_KAFKA_SASL_MECHANISM",
        "ssl.ca.location": "CARSTREAM_KAFKA_CA_FILE",
        "sasl.username": "CARSTREAM_KAFKA_USERNAME",
        "sasl.password": "CARSTREAM_KAFKA_PASSWORD",
    }
    for key, variable in optional.items():
        if env.get(variable):
            config[key] = env[variable]
    return config


def _offsets(
    admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec
) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets(dict.fromkeys(partitions, spec), request_timeout=10)
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


def record_counts(admin: AdminClient, topics: Sequence[str]) -> dict[str, int]:
    """Records currently retained per topic (latest minus earliest offset, over partitions)."""
    metadata = admin.list_topics(timeout=10)
    partitions: list[TopicPartition] = []
    counts = dict.fromkeys(topics, 0)
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            continue
        partitions.extend(TopicPartition(topic, p) for p in found.partitions)
    if not partitions:
        return counts
    earliest = _offsets(admin, partitions, OffsetSpec.earliest())
    latest = _offsets(admin, partitions, OffsetSpec.latest())
    for (topic, partition), offset in latest.items():
        counts[topic] += offset - earliest[(topic, partition)]
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_topics", description="Wait until every topic holds at least one record."
    )
    parser.add_argument("topics", nargs="+", metavar="TOPIC")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")

    admin = AdminClient(client_config(os.environ))
    deadline = time.monotonic() + args.timeout
    counts: dict[str, int] = dict.fromkeys(args.topics, 0)
    while True:
        try:
            counts = record_counts(admin, args.topics)
        except KafkaException as error:
            print(f"check_topics: Kafka not ready: {error}", flush=True)
        empty = [topic for topic, count in counts.items() if count <= 0]
        print(
            "check_topics: " + ", ".join(f"{t}={c}" for t, c in counts.items()),
            flush=True,
        )
        if not empty:
            return 0
        if time.monotonic() >= deadline:
            print(f"check_topics: still empty after {args.timeout:g}s: {', '.join(empty)}")
            return 1
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


if __name__ == "__main__":
    sys.exit(main())
