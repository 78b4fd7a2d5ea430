"""Prometheus metrics of the stages and of the generator (docs/observability.md lists them).

No Spark here (the generator does not load it). The streaming query listener of
carstream.spark_io (QueryMetrics) hands each micro-batch's progress report to
`record_progress`, which makes metrics of it: rates, batch durations and sizes, records
behind the latest offset per topic-partition, watermark delay, state rows, and the
data-quality counts every stage observes with `DataFrame.observe` (valid records, dead
letters by reason, alerts by rule). Nothing runs per record in Python. The same listener
commits each batch's offsets to the query's consumer group (carstream.consumer_groups),
where Kafka lag tools see them.

`--metrics-port` serves the metrics over HTTP (prometheus_client's server, in a thread).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from carstream.config import add_option, positive_int_arg
from carstream.consumer_groups import parse_offsets

logger = logging.getLogger("carstream.metrics")
DEFAULT_PIPELINE = "carstream"

# Names of the columns the stages observe per batch (DataFrame.observe, see
# validation.quality_counts): the progress line and the metrics read them.
VALID_COUNT = "valid"
DEAD_LETTER_COUNT_PREFIX = "dead_letter_"
RULE_COUNT_PREFIX = "rule_"
"""rule_<name>: alerts that broke the rule <name> (detect)."""


QUERY_LABELS = ("pipeline", "stage", "query")
BATCHES = Counter("carstream_query_batches", "Micro-batches completed.", QUERY_LABELS)
INPUT_ROWS = Counter(
    "carstream_query_input_rows", "Records the query read from Kafka.", QUERY_LABELS
)
INPUT_RATE = Gauge(
    "carstream_query_input_rows_per_second",
    "Arrival rate of records during the last micro-batch (Spark's inputRowsPerSecond).",
    QUERY_LABELS,
)
PROCESSED_RATE = Gauge(
    "carstream_query_processed_rows_per_second",
    "Records processed per second in the last micro-batch.",
    QUERY_LABELS,
)
BATCH_SECONDS = Histogram(
    "carstream_query_batch_duration_seconds",
    "Duration of a micro-batch, planning and commit included.",
    QUERY_LABELS,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
BATCH_ROWS = Gauge("carstream_query_batch_rows", "Records in the last micro-batch.", QUERY_LABELS)
LAG = Gauge(
    "carstream_query_consumer_lag_records",
    "Records behind the latest offset of a topic-partition, after the last micro-batch.",
    (*QUERY_LABELS, "topic", "partition"),
)
WATERMARK_DELAY = Gauge(
    "carstream_query_watermark_delay_seconds",
    "Time of the last micro-batch minus the query's event-time watermark.",
    QUERY_LABELS,
)
STATE_ROWS = Gauge(
    "carstream_query_state_rows", "Rows held in the query's state stores.", QUERY_LABELS
)
LAST_PROGRESS = Gauge(
    "carstream_query_last_progress_timestamp_seconds",
    "Unix time of the query's last progress report, or of its last report of being idle.",
    QUERY_LABELS,
)
RECORDS = Counter(
    "carstream_stage_records",
    "Records the stage validated, by outcome (valid or dead_letter).",
    ("pipeline", "stage", "outcome"),
)
DEAD_LETTERS = Counter(
    "carstream_stage_dead_letters",
    "Records sent to the dead-letter topic, by reason.",
    ("pipeline", "stage", "reason"),
)
ALERTS = Counter(
    "carstream_alerts",
    "Alerts found, by rule (an alert can break several rules).",
    ("pipeline", "stage", "rule"),
)
WINDOWS_UPDATED = Counter(
    "carstream_windows_updated",
    "Windows the counter wrote to alert-counts.",
    ("pipeline", "stage"),
)
LATEST_WINDOW_ALERTS = Gauge(
    "carstream_latest_window_alerts",
    "Alerts in the newest window written: family=all, or per colour family.",
    ("pipeline", "stage", "family"),
)
LATEST_WINDOW_SPEED = Gauge(
    "carstream_latest_window_maximum_speed",
    "Maximum speed in the newest window written.",
    ("pipeline", "stage"),
)
LATEST_WINDOW_START = Gauge(
    "carstream_latest_window_start_timestamp_seconds",
    "Start of the newest window written (Unix time).",
    ("pipeline", "stage"),
)
EVENTS_SENT = Counter(
    "carstream_generator_events_sent",
    "Events the generator handed to the Kafka producer.",
    ("pipeline", "stage"),
)
DELIVERY_ERRORS = Counter(
    "carstream_generator_delivery_errors",
    "Events Kafka did not take (failed deliveries, or unsent at the flush timeout).",
    ("pipeline", "stage"),
)


@dataclass(frozen=True)
class MetricsSettings:
    """Which pipeline the metrics and consumer groups are named after, and where the metrics
    are served."""

    pipeline: str = DEFAULT_PIPELINE
    port: int | None = None
    address: str = "0.0.0.0"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, *, address: str = "0.0.0.0") -> None:
        group = parser.add_argument_group("metrics")
        add_option(
            group,
            "--pipeline",
            default=DEFAULT_PIPELINE,
            help="the pipeline's name: label of the metrics, prefix of the consumer groups",
        )
        add_option(
            group,
            "--metrics-port",
            type=positive_int_arg,
            help="serve Prometheus metrics on this port at /metrics (default: not served)",
        )
        add_option(group, "--metrics-address", default=address, help="address to serve them on")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MetricsSettings:
        return cls(
            pipeline=args.pipeline,
            port=args.metrics_port,
            address=args.metrics_address,
        )


def serve(settings: MetricsSettings) -> None:
    """Starts serving the process's metrics when a port is set (a daemon thread)."""
    if settings.port is None:
        return
    start_http_server(settings.port, addr=settings.address)
    logger.info("metrics at http://%s:%d/metrics", settings.address, settings.port)


def stage_of(query: str) -> str:
    """The stage a query belongs to: its name up to the first '-' (count-dead-letters ->
    count)."""
    return query.split("-", 1)[0]


def _epoch_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def record_progress(pipeline: str, progress: Mapping[str, Any]) -> None:
    """Updates the metrics from one progress report (StreamingQueryProgress as JSON)."""
    query = str(progress.get("name") or progress.get("id"))
    labels = (pipeline, stage_of(query), query)
    rows = int(progress.get("numInputRows") or 0)
    BATCHES.labels(*labels).inc()
    INPUT_ROWS.labels(*labels).inc(rows)
    BATCH_ROWS.labels(*labels).set(rows)
    INPUT_RATE.labels(*labels).set(float(progress.get("inputRowsPerSecond") or 0.0))
    PROCESSED_RATE.labels(*labels).set(float(progress.get("processedRowsPerSecond") or 0.0))
    BATCH_SECONDS.labels(*labels).observe(int(progress.get("batchDuration") or 0) / 1000)
    at = record_alive(pipeline, query, progress.get("timestamp"))
    for (topic, partition), behind in consumer_lag(progress).items():
        LAG.labels(*labels, topic, str(partition)).set(behind)
    watermark = (progress.get("eventTime") or {}).get("watermark")
    watermark_at = _epoch_seconds(watermark) if watermark else 0.0
    if watermark_at > 0:  # the epoch until the query's first watermark
        WATERMARK_DELAY.labels(*labels).set(max(0.0, at - watermark_at))
    operators = progress.get("stateOperators") or []
    if operators:
        STATE_ROWS.labels(*labels).set(sum(int(op.get("numRowsTotal") or 0) for op in operators))
    for name, observed in (progress.get("observedMetrics") or {}).items():
        # Named after the stage whose counts they are (enrich-detect observes both stages').
        record_observed(pipeline, stage_of(name), observed)


def record_alive(pipeline: str, query: str, timestamp: str | None) -> float:
    """The query reported progress (or that it is idle) at `timestamp` (ISO, default now)."""
    at = _epoch_seconds(timestamp) if timestamp else time.time()
    LAST_PROGRESS.labels(pipeline, stage_of(query), query).set(at)
    return at


def consumer_lag(progress: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    """Records between the end of the batch and the latest offset Spark saw, per partition."""
    lag: dict[tuple[str, int], int] = {}
    for source in progress.get("sources") or []:
        end = parse_offsets(source.get("endOffset"))
        latest = parse_offsets(source.get("latestOffset"))
        for tp, offset in end.items():
            lag[tp] = max(0, latest.get(tp, offset) - offset)
    return lag


def processed_offsets(progress: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    offsets: dict[tuple[str, int], int] = {}
    for source in progress.get("sources") or []:
        offsets.update(parse_offsets(source.get("endOffset")))
    return offsets


def record_observed(pipeline: str, stage: str, observed: Mapping[str, Any]) -> None:
    """Counts of one batch's observation: validation.quality_counts' columns and detect's
    rule_<name>; other columns are only logged."""
    for name, value in observed.items():
        count = int(value or 0)
        if name == VALID_COUNT:
            RECORDS.labels(pipeline, stage, "valid").inc(count)
        elif name.startswith(DEAD_LETTER_COUNT_PREFIX):
            DEAD_LETTERS.labels(pipeline, stage, name.removeprefix(DEAD_LETTER_COUNT_PREFIX)).inc(
                count
            )
            RECORDS.labels(pipeline, stage, "dead_letter").inc(count)
        elif name.startswith(RULE_COUNT_PREFIX):
            ALERTS.labels(pipeline, stage, name.removeprefix(RULE_COUNT_PREFIX)).inc(count)


def record_windows(pipeline: str, windows: Iterable[Mapping[str, Any]]) -> None:
    """The counter wrote these windows (rows of count's output): counts the updates and sets
    the newest window's gauges."""
    rows = list(windows)
    if not rows:
        return
    WINDOWS_UPDATED.labels(pipeline, "count").inc(len(rows))
    newest = max(rows, key=lambda row: row["window_start"])
    start = newest["window_start"]
    LATEST_WINDOW_START.labels(pipeline, "count").set(
        start.timestamp() if isinstance(start, datetime) else _epoch_seconds(str(start))
    )
    LATEST_WINDOW_ALERTS.labels(pipeline, "count", "all").set(newest["num_of_rows"] or 0)
    LATEST_WINDOW_SPEED.labels(pipeline, "count").set(newest["maximum_speed"] or 0)
    for name, value in newest.items():
        if name.startswith("num_of_") and name != "num_of_rows":
            LATEST_WINDOW_ALERTS.labels(pipeline, "count", name.removeprefix("num_of_")).set(
                value or 0
            )


class GeneratorMetrics:
    """What the generator reports: events handed to the producer, delivery errors."""

    def __init__(self, pipeline: str) -> None:
        self._sent = EVENTS_SENT.labels(pipeline, "generate")
        self._errors = DELIVERY_ERRORS.labels(pipeline, "generate")
        self._sent.inc(0)
        self._errors.inc(0)

    def sent(self, events: int) -> None:
        self._sent.inc(events)

    def failed(self, events: int) -> None:
        self._errors.inc(events)
