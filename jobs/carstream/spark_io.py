"""All Spark I/O of carstream: the session, Kafka sources and sinks, Parquet, triggers, progress.

The stages' transforms are pure DataFrame -> DataFrame functions; this module is the edge
where DataFrames meet Kafka topics, Parquet folders and checkpoints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from carstream import lineage, metrics, toolchain
from carstream.config import KafkaSettings, S3Settings, StreamSettings
from carstream.consumer_groups import OffsetCommitter
from carstream.metrics import DEAD_LETTER_COUNT_PREFIX, RULE_COUNT_PREFIX, VALID_COUNT
from carstream.query_events import QueryEventHandler

LOG4J_CONFIG = Path(__file__).with_name("spark-log4j2.properties")

PRODUCER_OPTIONS: Mapping[str, str] = {
    # At-least-once: a write is done when all in-sync replicas have it; retries cannot
    # reorder or duplicate within a producer session.
    "kafka.acks": "all",
    "kafka.enable.idempotence": "true",
    "kafka.linger.ms": "20",
    # Big lz4 batches: with the 16 KB default, enrich draining 1M events on 2 cores managed
    # 24k events/s; with these 40k (bench/, docs/local-pipeline.md).
    "kafka.compression.type": "lz4",
    "kafka.batch.size": "262144",
}

CONSUMER_OPTIONS: Mapping[str, str] = {
    # Fewer, bigger fetches: with the defaults (500 records a poll, 1 MB a partition) Spark's
    # Kafka reader polls, seeks and asks for positions every 500 records; reading 1M events
    # to a no-op sink took 5.9 s (cold JVM) instead of 3.8 s, and the broker worked twice as
    # hard (bench/, docs/local-pipeline.md).
    "kafka.max.poll.records": "20000",
    "kafka.max.partition.fetch.bytes": str(16 * 1024 * 1024),
    "kafka.fetch.max.bytes": str(64 * 1024 * 1024),
}


class DataMissing(RuntimeError):
    """An input the stage reads (e.g. a dimension table) does not exist yet."""


def under_spark_submit() -> bool:
    """True in a driver started by spark-submit (a SparkApplication): it owns JVM and conf."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(
    app_name: str = "carstream",
    *,
    master: str = "local[*]",
    shuffle_partitions: int = 2,
    with_kafka: bool = True,
    s3: S3Settings | None = None,
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """The session the stages run in.

    Under spark-submit (or when a session already runs in this process) the existing session
    and its configuration are used as they are. Otherwise a local session starts with
    Spark's Kafka connector from the toolchain cache, no UI and quiet logs.

    With `s3` (the stage reads or writes an s3a:// location), a local session also gets
    hadoop-aws and the AWS SDK, and every session gets s3a's endpoint, region and credentials
    chain from it, unless the Spark configuration (spark.hadoop.fs.s3a.*) already sets them.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        spark = active
    elif under_spark_submit():
        spark = SparkSession.builder.appName(app_name).getOrCreate()
    else:
        builder = (
            SparkSession.builder.appName(app_name)
            .master(master)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config(
                "spark.driver.extraJavaOptions",
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}",
            )
        )
        groups = (["spark-kafka"] if with_kafka else []) + (["spark-s3"] if s3 else [])
        if groups:
            jars = ",".join(str(jar) for group in groups for jar in toolchain.jars(group))
            builder = builder.config("spark.jars", jars)
        for key, value in (extra_conf or {}).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    if s3 is not None:
        configure_s3a(spark, s3)
    return spark


def configure_s3a(spark: SparkSession, s3: S3Settings) -> None:
    """Sets s3a's settings on the session's Hadoop configuration, which the driver uses and
    ships with every job to the executors. A key the Spark configuration already set
    (spark.hadoop.fs.s3a.*, e.g. from a SparkApplication's sparkConf) is left alone."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    given = spark.sparkContext.getConf()
    for key, value in s3.hadoop_conf().items():
        if not given.contains(f"spark.hadoop.{key}"):
            hadoop.set(key, value)


# ---------------------------------------------------------------------------------------------
# Parquet


def read_parquet(spark: SparkSession, path: str, what: str) -> DataFrame:
    try:
        return spark.read.parquet(path)
    except AnalysisException as error:
        if error.getCondition() == "PATH_NOT_FOUND":
            raise DataMissing(
                f"the {what} is not at {path}: run `carstream stage dims` first"
            ) from None
        raise


def write_parquet(frame: DataFrame, path: str) -> None:
    """Replaces what is at `path` with `frame` as one Parquet file (keeps the row order)."""
    frame.coalesce(1).write.mode("overwrite").parquet(path)


def snapshot(frame: DataFrame) -> DataFrame:
    """A small table read once into the driver and held in the plan as local data: a streaming
    query joining it neither re-reads its files nor runs a job for it at every micro-batch
    (an Arrow table becomes a LocalRelation; a list of rows would become an RDD)."""
    return frame.sparkSession.createDataFrame(frame.toArrow())


# ---------------------------------------------------------------------------------------------
# Kafka


def read_kafka_stream(
    spark: SparkSession, kafka: KafkaSettings, topic: str, stream: StreamSettings
) -> DataFrame:
    """A topic as a stream of Kafka records: key, value, topic, partition, offset, timestamp."""
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())
        .options(**CONSUMER_OPTIONS)
        .option("subscribe", topic)
        .option("startingOffsets", stream.starting_offsets)
    )
    if stream.max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", str(stream.max_offsets_per_trigger))
    return reader.load()


def write_kafka(records: DataFrame, kafka: KafkaSettings) -> None:
    """Writes a batch of Kafka records (topic, key, value[, headers]) and waits for the acks."""
    records.write.format("kafka").options(**kafka.spark_options()).options(
        **PRODUCER_OPTIONS
    ).save()


def _triggered(writer: DataStreamWriter, stream: StreamSettings) -> DataStreamWriter:
    if stream.trigger == "availableNow":
        return writer.trigger(availableNow=True)
    if stream.trigger == "realTime":
        return writer.trigger(realTime=stream.trigger_interval)  # type: ignore[call-overload]
    return writer.trigger(processingTime=stream.trigger_interval)


def _start(
    writer: DataStreamWriter,
    stream: StreamSettings,
    *,
    query_name: str,
    checkpoint: str,
    output_mode: str,
) -> StreamingQuery:
    configured = (
        writer.queryName(query_name)
        .outputMode(output_mode)
        .option("checkpointLocation", checkpoint)
    )
    return _triggered(configured, stream).start()


def start_kafka_stream(
    records: DataFrame,
    kafka: KafkaSettings,
    stream: StreamSettings,
    *,
    query_name: str,
    checkpoint: str,
    output_mode: str = "append",
) -> StreamingQuery:
    """Starts writing a stream of Kafka records; each row names its topic."""
    writer = (
        records.writeStream.format("kafka")
        .options(**kafka.spark_options())
        .options(**PRODUCER_OPTIONS)
    )
    return _start(
        writer, stream, query_name=query_name, checkpoint=checkpoint, output_mode=output_mode
    )


def start_foreach_batch(
    rows: DataFrame,
    handle_batch: Callable[[DataFrame, int], None],
    stream: StreamSettings,
    *,
    query_name: str,
    checkpoint: str,
    output_mode: str = "append",
) -> StreamingQuery:
    """Starts a query that hands each micro-batch to `handle_batch(batch, batch_id)`."""
    writer = rows.writeStream.foreachBatch(handle_batch)
    return _start(
        writer, stream, query_name=query_name, checkpoint=checkpoint, output_mode=output_mode
    )


def set_shuffle_partitions(spark: SparkSession, stream: StreamSettings) -> None:
    """Applies the stage's shuffle width; a new checkpoint freezes it at the first batch."""
    spark.conf.set("spark.sql.shuffle.partitions", str(stream.shuffle_partitions))


# ---------------------------------------------------------------------------------------------
# Progress


def describe_progress(progress: Mapping[str, Any]) -> str:
    """One line about one micro-batch: input rows, rate, and the query's observed metrics."""
    rows = int(progress.get("numInputRows") or 0)
    rate = float(progress.get("processedRowsPerSecond") or 0.0)
    seconds = int(progress.get("batchDuration") or 0) / 1000
    parts = [
        f"{progress.get('name') or 'query'} batch {progress.get('batchId')}: {rows} read "
        f"in {seconds:.1f} s ({rate:,.0f} rows/s)"
    ]
    for observed in (progress.get("observedMetrics") or {}).values():
        counts = {name: int(value or 0) for name, value in dict(observed).items()}
        parts.extend(describe_observed(counts))
    return ", ".join(parts)


def describe_observed(values: Mapping[str, int]) -> list[str]:
    """A batch's observed counts: the data-quality section (valid records, dead letters by
    kind of reason), other counts as name=value, then alerts by rule."""
    dead = {
        name.removeprefix(DEAD_LETTER_COUNT_PREFIX): count
        for name, count in values.items()
        if name.startswith(DEAD_LETTER_COUNT_PREFIX)
    }
    rules = {
        name.removeprefix(RULE_COUNT_PREFIX): count
        for name, count in values.items()
        if name.startswith(RULE_COUNT_PREFIX)
    }
    parts = []
    if VALID_COUNT in values or dead:
        reasons = ", ".join(f"{kind} {count}" for kind, count in dead.items() if count)
        parts.append(
            f"quality: {values.get(VALID_COUNT, 0)} valid, {sum(dead.values())} dead letters"
            + (f" ({reasons})" if reasons else "")
        )
    parts.extend(
        f"{name}={count}"
        for name, count in values.items()
        if name != VALID_COUNT
        and not name.startswith((DEAD_LETTER_COUNT_PREFIX, RULE_COUNT_PREFIX))
    )
    if rules:
        parts.append("by rule: " + ", ".join(f"{rule} {count}" for rule, count in rules.items()))
    return parts


class ProgressLogger(QueryEventHandler):
    """Logs one line per micro-batch of every query in the session, and how queries end."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def started(self, event: Mapping[str, Any]) -> None:
        extra = {"query": event["name"], "query_id": str(event["id"])}
        self.logger.info("%s started (run %s)", event["name"], event["runId"], extra=extra)

    def progress(self, report: Mapping[str, Any]) -> None:
        self.logger.info(
            describe_progress(report),
            extra={
                "query": report.get("name"),
                "query_id": str(report.get("id")),
                "batch_id": report.get("batchId"),
            },
        )

    def terminated(self, event: Mapping[str, Any]) -> None:
        name = event["name"]
        extra = {"query": name, "query_id": str(event["id"])}
        if event.get("exception"):
            first_line = str(event["exception"]).splitlines()[0]
            self.logger.error("%s failed: %s", name, first_line, extra=extra)
        else:
            self.logger.info("%s stopped", name, extra=extra)


class QueryMetrics(QueryEventHandler):
    """Metrics (carstream.metrics) from every progress report of the session's queries, and
    the processed offsets committed to the queries' consumer groups (when `committer` is
    set). An idle query (no new input) still reports that it is alive."""

    def __init__(self, pipeline: str, committer: OffsetCommitter | None = None) -> None:
        self.pipeline = pipeline
        self.committer = committer

    def progress(self, report: Mapping[str, Any]) -> None:
        metrics.record_progress(self.pipeline, report)
        if self.committer is not None:
            self.committer.commit(str(report.get("name")), metrics.processed_offsets(report))

    def idle(self, event: Mapping[str, Any]) -> None:
        if event["name"] is not None:
            metrics.record_alive(self.pipeline, event["name"], event.get("timestamp"))


class QueryLineage(QueryEventHandler):
    """carstream's lineage events (carstream.lineage.StageLineage) of the session's queries:
    START with what the query reads and writes (`datasets(query name)` -> inputs, outputs)
    when it starts, COMPLETE or FAIL when it ends; the query's run id is the event's."""

    def __init__(
        self,
        events: lineage.StageLineage,
        datasets: Callable[[str], tuple[list[lineage.DatasetId], list[lineage.DatasetId]]],
    ) -> None:
        self.events = events
        self.datasets = datasets

    def started(self, event: Mapping[str, Any]) -> None:
        name = event["name"]
        inputs, outputs = self.datasets(name)
        self.events.send(self.events.event("START", name, str(event["runId"]), inputs, outputs))

    def terminated(self, event: Mapping[str, Any]) -> None:
        ended = "FAIL" if event.get("exception") else "COMPLETE"
        self.events.send(self.events.event(ended, event["name"], str(event["runId"])))
