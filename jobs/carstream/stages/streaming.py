"""What the streaming stages (enrich, detect, count) share: their settings and how they run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from carstream import lineage, metrics, query_events, spark_io, toolchain
from carstream.config import (
    KafkaSettings,
    S3Settings,
    StorageSettings,
    StreamSettings,
    Topics,
    TriggerKind,
    s3_if_used,
)
from carstream.consumer_groups import OffsetCommitter
from carstream.idle_stop import IdleWatch
from carstream.lineage import LineageSettings
from carstream.metrics import MetricsSettings
from carstream.query_events import QueryEventHandler
from carstream.shutdown import stop_requested_on_signals
from carstream.stages import StageUsageError, configure_logging

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
logger = logging.getLogger("carstream.streaming")


@dataclass(frozen=True)
class StreamJob:
    """Where a streaming stage reads and writes (Kafka, topics) and how it runs (checkpoint,
    trigger)."""

    kafka: KafkaSettings
    topics: Topics
    stream: StreamSettings
    s3: S3Settings = field(default_factory=S3Settings)  # for a checkpoint on s3a://
    lineage: LineageSettings = field(default_factory=LineageSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        KafkaSettings.add_arguments(parser)
        Topics.add_arguments(parser)
        StreamSettings.add_arguments(parser)
        S3Settings.add_arguments(parser)
        LineageSettings.add_arguments(parser)
        MetricsSettings.add_arguments(parser)

    @classmethod
    def from_args(cls, args: argparse.Namespace, stage: str) -> StreamJob:
        return cls(
            kafka=KafkaSettings.from_args(args),
            topics=Topics.from_args(args),
            stream=StreamSettings.from_args(args, stage),
            s3=S3Settings.from_args(args),
            lineage=LineageSettings.from_args(args),
            metrics=MetricsSettings.from_args(args),
        )

    def checkpoint(self, query: str | None = None) -> str:
        """The stage's checkpoint, or the subfolder of one of its queries."""
        root = self.stream.checkpoint_location.rstrip("/")
        return root if query is None else f"{root}/{query}"


def require_trigger(stage: str, stream: StreamSettings, supported: Sequence[TriggerKind]) -> None:
    if stream.trigger not in supported:
        raise StageUsageError(
            f"the {stream.trigger} trigger is not supported by the {stage} stage in this Spark "
            f"version; use one of: {', '.join(supported)}"
        )


def start_record_query(
    spark: SparkSession,
    job: StreamJob,
    stage: str,
    topic: str,
    to_records: Callable[[DataFrame], DataFrame],
) -> StreamingQuery:
    """Starts a stateless query: the records of `topic`, through `to_records`, to Kafka (each
    output row names its topic: the stage's output or the dead-letter topic)."""
    messages = spark_io.read_kafka_stream(spark, job.kafka, topic, job.stream)
    spark_io.set_shuffle_partitions(spark, job.stream)
    return spark_io.start_kafka_stream(
        to_records(messages),
        job.kafka,
        job.stream,
        query_name=stage,
        checkpoint=job.checkpoint(),
        output_mode="update",  # = append for a query without aggregation; realTime needs it
    )


def stop_all(queries: Sequence[StreamingQuery]) -> None:
    for query in queries:
        if query.isActive:
            query.stop()


def await_queries(
    queries: Sequence[StreamingQuery],
    stop: threading.Event | None = None,
    poll_seconds: float = 0.5,
    idle: IdleWatch | None = None,
) -> bool:
    """Waits until every query has ended, or until `stop` is set; stops them all on the way
    out. Returns True when the queries ended by themselves (an availableNow trigger ends a
    query once it has drained its input) or went idle (`idle`), False when stopped. Raises
    the first query failure.
    """
    next_look = time.monotonic()
    try:
        while True:
            for query in queries:
                if not query.isActive and query.exception() is not None:
                    query.awaitTermination()  # raises the query's StreamingQueryException
            if not any(query.isActive for query in queries):
                return True
            if idle is not None and time.monotonic() >= next_look:
                next_look = time.monotonic() + idle.poll_seconds
                if idle.look(queries, time.monotonic()):
                    logger.info(
                        "no input rows for %gs: stopping (--idle-stop-seconds); the checkpoint "
                        "keeps the position",
                        idle.seconds,
                    )
                    return True
            if stop is None:
                time.sleep(poll_seconds)
            elif stop.wait(poll_seconds):
                return False
    finally:
        stop_all(queries)


def observe_queries(
    spark: SparkSession,
    job: StreamJob,
    storage: StorageSettings | None,
    *handlers: QueryEventHandler,
) -> OffsetCommitter:
    """What every streaming session gets: the metrics handler (which also commits offsets to
    the queries' consumer groups), the metrics endpoint of --metrics-port, and with --lineage
    carstream's lineage events of each query; `handlers` too, behind the same one listener
    (query_events). Returns the committer (commit_last_offsets)."""
    committer = OffsetCommitter(job.kafka, job.metrics.pipeline)
    every = [*handlers, spark_io.QueryMetrics(job.metrics.pipeline, committer)]
    metrics.serve(job.metrics)
    if job.lineage.enabled:
        every.append(
            spark_io.QueryLineage(
                lineage.StageLineage(job.lineage),
                lambda query: lineage.query_datasets(
                    query, job.kafka.bootstrap_servers, job.topics, storage
                ),
            )
        )
    query_events.listen(spark, *every)
    return committer


def commit_last_offsets(committer: OffsetCommitter, queries: Sequence[StreamingQuery]) -> None:
    """Commits each ended query's last processed offsets to its consumer group, from here:
    the listener's commit of the last micro-batch runs on Spark's listener thread, which a
    driver that exits right after its queries end (an availableNow run, an idle stop) may
    never let through; the operator's wake reads these groups."""
    for query in queries:
        progress = query.lastProgress
        if progress is None:
            continue
        report = json.loads(progress.json) if hasattr(progress, "json") else dict(progress)
        committer.commit(str(query.name), metrics.processed_offsets(report))


def stage_main(
    stage: str,
    job: StreamJob,
    start: Callable[[SparkSession], list[StreamingQuery]],
    storage: StorageSettings | None = None,
) -> int:
    """`carstream stage NAME` for a streaming stage: a session, the queries, progress logged
    one line per micro-batch, until the queries end (exit 0) or Ctrl+C / SIGTERM stops them
    (130). A failure (a query's, a missing dimension) is raised: `carstream stage` reports it
    (carstream.stages.report_failure) and exits 1. `storage`: the warehouse the stage reads
    (enrich), for s3a and lineage."""
    if job.stream.idle_stop_seconds and job.stream.trigger != "processingTime":
        raise StageUsageError(
            f"--idle-stop-seconds needs --trigger processingTime, not {job.stream.trigger} "
            "(an availableNow run ends by itself once drained)"
        )
    configure_logging()
    logger = logging.getLogger(f"carstream.{stage}")
    try:
        spark = spark_io.spark_session(
            f"carstream-{stage}",
            shuffle_partitions=job.stream.shuffle_partitions,
            s3=s3_if_used(
                job.s3, job.stream.checkpoint_location, *([storage.warehouse] if storage else [])
            ),
            extra_conf=job.lineage.local_spark_conf(),
        )
    except toolchain.ToolchainMissing as error:
        print(f"carstream stage {stage}: {error}", file=sys.stderr)
        return EXIT_FAILED
    committer = observe_queries(spark, job, storage, spark_io.ProgressLogger(logger))
    seconds = job.stream.idle_stop_seconds
    try:
        with stop_requested_on_signals() as stop:
            queries = start(spark)
            idle = IdleWatch(seconds, time.monotonic()) if seconds else None
            ended = await_queries(queries, stop, idle=idle)
        commit_last_offsets(committer, queries)
        if not ended:
            logger.info("stopped on request; the checkpoint keeps the position")
            return EXIT_INTERRUPTED
    finally:
        if not spark_io.under_spark_submit():
            spark.stop()
    logger.info("done")
    return 0
