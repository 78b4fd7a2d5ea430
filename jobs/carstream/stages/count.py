"""Stage 7, alert counter: alerts per sliding event-time window (alert-data -> alert-counts and
the console).

Each event_id is counted once: alerts are deduplicated on event_id within the watermark, so an
alert replayed by an upstream restart is not counted twice. Per window (--window long, every
--slide): window_start, window_end, num_of_rows, num_of_<family> for each color family
(case-insensitive), maximum_speed, maximum_gear, maximum_rpm.

Output mode is update: every micro-batch prints the windows it changed, sorted by start, and
writes each as JSON to alert-counts keyed by window_start, so the latest message of a key
(what a compacted topic keeps) is the window's final value. A window is final once the
watermark (latest event time seen - --watermark) passes its end; alerts older than the
watermark are dropped. Invalid messages go to the dead-letter topic by a second query with
its own checkpoint (<checkpoint>/dead-letters; the windows use <checkpoint>/windows).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from carstream import metrics, spark_io, validation
from carstream.config import CountSettings, KafkaSettings, TriggerKind, interval_seconds
from carstream.schemas import ALERT
from carstream.stages import StageUsageError
from carstream.stages.streaming import StreamJob, await_queries, require_trigger, stage_main

STAGE = "count"
DEAD_LETTER_QUERY = f"{STAGE}-dead-letters"
# Real-time mode in Spark 4.2 allows stateless operators only (no deduplication, no windows).
SUPPORTED_TRIGGERS: tuple[TriggerKind, ...] = ("processingTime", "availableNow")
EVENT_TIMESTAMP = "event_timestamp"
ISO_INSTANT_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"
WindowsHandler = Callable[[list[dict[str, Any]]], None]
"""Called with the windows of each micro-batch that updated some (count's output rows)."""
_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_settings(settings: CountSettings) -> None:
    window, slide = interval_seconds(settings.window), interval_seconds(settings.slide)
    if slide > window:
        raise StageUsageError(
            f"--slide {settings.slide!r} must not be longer than --window {settings.window!r}"
        )
    for name in settings.color_families:
        if not _FAMILY_NAME.match(name) or name == "rows":
            raise StageUsageError(
                f"--color-family {name!r}: a family name must be lowercase letters, digits "
                "and _, starting with a letter, and not 'rows' (it names the column "
                "num_of_<name>)"
            )


def output_columns(settings: CountSettings) -> list[str]:
    families = [f"num_of_{name}" for name in settings.color_families]
    return [
        "window_start",
        "window_end",
        "num_of_rows",
        *families,
        "maximum_speed",
        "maximum_gear",
        "maximum_rpm",
    ]


def deduplicate(alerts: DataFrame, settings: CountSettings) -> DataFrame:
    """Valid alerts -> the same with `event_timestamp`, each event_id once within the watermark."""
    timed = alerts.withColumn(EVENT_TIMESTAMP, validation.event_timestamp(F.col("event_time")))
    if not timed.isStreaming:  # a batch has no watermark: all of it is "within"
        return timed.dropDuplicates(["event_id"])
    return timed.withWatermark(EVENT_TIMESTAMP, settings.watermark).dropDuplicatesWithinWatermark(
        ["event_id"]
    )


_COLOR = "_color_lowercase"


def family_count(name: str, members: Sequence[str]) -> Column:
    """How many rows have a color_name in `members`, ignoring case (over rows with the
    column _COLOR: window_counts)."""
    lowered = sorted({member.lower() for member in members})
    in_family = F.col(_COLOR).isin(lowered)
    return F.count_if(in_family).cast("int").alias(f"num_of_{name}")


def window_counts(alerts: DataFrame, settings: CountSettings) -> DataFrame:
    """Deduplicated alerts -> one row per window (per updated window in a stream)."""
    window = F.window(EVENT_TIMESTAMP, settings.window, settings.slide)
    # Lower-cased once per alert, not once per family and window: a sliding window copies
    # each alert into window/slide rows (15 by default) before the aggregation, and Spark
    # 4's lower() goes through ICU's case mapping (5.6% of the Spark JVM's samples in
    # carstream run at 2,000 events/s before this).
    colored = alerts.withColumn(_COLOR, F.lower(F.col("color_name")))
    counted = colored.groupBy(window.alias("window")).agg(
        F.count(F.lit(1)).cast("int").alias("num_of_rows"),
        *(family_count(name, members) for name, members in settings.color_families.items()),
        F.max("speed").alias("maximum_speed"),
        F.max("gear").alias("maximum_gear"),
        F.max("rpm").alias("maximum_rpm"),
    )
    return counted.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        *output_columns(settings)[2:],
    )


def count_alerts(alerts: DataFrame, settings: CountSettings) -> DataFrame:
    """Valid alerts -> window counts, each event_id counted once."""
    return window_counts(deduplicate(alerts, settings), settings)


def iso_instant(timestamp: Column) -> Column:
    return F.date_format(timestamp, ISO_INSTANT_FORMAT)


def window_records(windows: DataFrame, topic: str) -> DataFrame:
    """Window counts -> Kafka records for `alert-counts`, keyed by window_start."""
    fields = [
        iso_instant(F.col(name)).alias(name) if name.startswith("window_") else F.col(name)
        for name in windows.columns
    ]
    return windows.select(
        F.lit(topic).alias("topic"),
        iso_instant(F.col("window_start")).alias("key"),
        F.to_json(F.struct(*fields)).alias("value"),
    )


def dead_letter_records(messages: DataFrame, dlq_topic: str) -> DataFrame:
    """Records of `alert-data` -> the dead letters among them, for the dead-letter topic. The
    query observes the quality of every record (validation.quality_counts)."""
    parsed = validation.parse_messages(messages, ALERT).observe(
        DEAD_LETTER_QUERY, *validation.quality_counts()
    )
    return validation.dead_letters(parsed, stage=STAGE, dlq_topic=dlq_topic)


def format_windows(rows: Sequence[Row], batch_id: int, columns: Sequence[str]) -> str:
    """A console table of window counts, one line per window."""

    def cell(value: Any) -> str:
        if hasattr(value, "strftime"):
            return str(value.strftime("%Y-%m-%d %H:%M:%S"))
        return str(value)

    table = [list(columns)] + [[cell(row[name]) for name in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [
        "  ".join(
            text.ljust(width) if i < 2 else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    title = f"alert counts, batch {batch_id}: {len(rows)} window(s) updated"
    return "\n".join([title, *lines, ""])


class WindowPublisher:
    """foreachBatch handler: writes a micro-batch's windows to Kafka, then prints them, counts
    them in the metrics and hands them to `on_windows` (e.g. carstream run's picture)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        columns: Sequence[str],
        console: TextIO | None = None,
        *,
        pipeline: str = metrics.DEFAULT_PIPELINE,
        on_windows: WindowsHandler | None = None,
    ) -> None:
        self.kafka, self.topic, self.columns = kafka, topic, list(columns)
        self.console = console
        self.pipeline = pipeline
        self.on_windows = on_windows

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            rows = batch.orderBy("window_start").collect()
            if not rows:
                return
            spark_io.write_kafka(window_records(batch, self.topic), self.kafka)
            console = self.console or sys.stdout
            console.write(format_windows(rows, batch_id, self.columns))
            console.flush()
            windows = [row.asDict() for row in rows]
            metrics.record_windows(self.pipeline, windows)
            if self.on_windows is not None:
                self.on_windows(windows)
        finally:
            batch.unpersist()


def start(
    spark: SparkSession,
    job: StreamJob,
    settings: CountSettings,
    console: TextIO | None = None,
    on_windows: WindowsHandler | None = None,
) -> list[StreamingQuery]:
    """Starts the windows query and the dead-letter query on `spark`; returns them without
    waiting. Windows are printed to `console` (default: stdout) and handed to `on_windows`."""
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    check_settings(settings)
    spark_io.set_shuffle_partitions(spark, job.stream)
    alerts_topic = job.topics.alerts

    messages = spark_io.read_kafka_stream(spark, job.kafka, alerts_topic, job.stream)
    valid = validation.parse_messages(messages, ALERT).where(~validation.is_dead_letter())
    unique = deduplicate(valid, settings).observe(
        STAGE, F.count(F.lit(1)).cast("int").alias("counted_alerts")
    )
    windows_query = spark_io.start_foreach_batch(
        window_counts(unique, settings),
        WindowPublisher(
            job.kafka,
            job.topics.counts,
            output_columns(settings),
            console,
            pipeline=job.metrics.pipeline,
            on_windows=on_windows,
        ),
        job.stream,
        query_name=STAGE,
        checkpoint=job.checkpoint("windows"),
        output_mode="update",
    )

    again = spark_io.read_kafka_stream(spark, job.kafka, alerts_topic, job.stream)
    dead_letter_query = spark_io.start_kafka_stream(
        dead_letter_records(again, job.topics.dlq),
        job.kafka,
        job.stream,
        query_name=DEAD_LETTER_QUERY,
        checkpoint=job.checkpoint("dead-letters"),
    )
    return [windows_query, dead_letter_query]


def run(spark: SparkSession, job: StreamJob, settings: CountSettings) -> None:
    """Runs the stage until its queries end (availableNow) or one fails."""
    await_queries(start(spark, job, settings))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    StreamJob.add_arguments(parser)
    CountSettings.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    job, settings = StreamJob.from_args(args, STAGE), CountSettings.from_args(args)
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    check_settings(settings)
    return stage_main(STAGE, job, lambda spark: start(spark, job, settings))
