"""End-to-end latency: from an event's event_time to the Kafka timestamp of its alert on
alert-data, with the generator offering a steady rate while enrich and detect run."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from common import CpuMeter
from pyspark.sql.streaming import StreamingQuery

from carstream.config import GeneratorSettings, KafkaSettings, Topics
from carstream.kafka_admin import TopicAdmin, read_to_end
from carstream.stages import generate

DRAIN_TIMEOUT_SECONDS = 60


def _epoch_millis(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _wait_for_first_batches(queries: Sequence[StreamingQuery], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while any(query.lastProgress is None for query in queries):
        for query in queries:
            if query.exception() is not None:
                raise RuntimeError(f"query {query.name} failed: {query.exception()}")
        if time.monotonic() > deadline:
            raise TimeoutError("the queries did not complete a first micro-batch")
        time.sleep(0.2)


def _wait_until_caught_up(admin: TopicAdmin, topics: Topics, produced: int) -> None:
    """Until samples-enriched holds every event (enrich is done) and alert-data has stopped
    growing for a few seconds (detect is done)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        ends = admin.end_offsets([topics.enriched, topics.alerts])
        if ends[topics.alerts] != last:
            last, stable_since = ends[topics.alerts], time.monotonic()
        if ends[topics.enriched] >= produced and time.monotonic() - stable_since > 3:
            return
        time.sleep(0.5)
    raise TimeoutError("the stages did not catch up with the generator")


def measure(
    kafka: KafkaSettings,
    topics: Topics,
    car_ids: Sequence[int],
    start_stages: Callable[[], list[StreamingQuery]],
    *,
    rate: float,
    seconds: float,
    warm_up: float,
) -> dict[str, Any]:
    """Offers `rate` events/s for `warm_up + seconds`; latencies of the alerts of events sent
    after the warm-up."""
    queries = start_stages()
    admin = TopicAdmin(kafka)
    try:
        _wait_for_first_batches(queries)
        meter = CpuMeter()
        with meter.measure():
            started_ms = time.time() * 1000
            report = generate.run(
                kafka,
                topics,
                GeneratorSettings(rate=rate, time_limit=warm_up + seconds, seed=5),
                car_ids,
            )
        _wait_until_caught_up(admin, topics, report.sent)
    finally:
        for query in queries:
            query.stop()
        admin.close()
    measured_from = started_ms + warm_up * 1000
    latencies = []
    for message in read_to_end(kafka, topics.alerts):
        alert = json.loads(message.value() or b"")
        sent_at = _epoch_millis(alert["event_time"])
        if sent_at >= measured_from:
            latencies.append(message.timestamp()[1] - sent_at)
    latencies.sort()
    if not latencies:
        raise RuntimeError("no alerts after the warm-up")
    return {
        "offered_events_per_second": rate,
        "sent_events_per_second": round(report.rate, 1),
        "measured_seconds": seconds,
        "warm_up_seconds": warm_up,
        "alerts_measured": len(latencies),
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "max": latencies[-1],
            "min": latencies[0],
        },
        "cores_used": meter.cores_used(),
    }
