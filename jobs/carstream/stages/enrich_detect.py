"""Stages 5 and 6 fused: enrichment and alert detection in one pass (sensors-sample ->
samples-enriched and alert-data).

The same records as `enrich` followed by `detect`, from one query: each sensor event is
parsed and validated once, joined with the car profiles once, and every micro-batch writes
from those enriched rows the `samples-enriched` record of each valid event, the `alert-data`
record of each valid event that breaks a rule (byte for byte what `detect` would write from
that enriched record) and the dead letters of enrich, with the same reasons and headers. What
is saved: detect's Kafka read of `samples-enriched`, its JSON parse and validation of every
enriched record, its own micro-batch overhead, and the serialization of every alert (its JSON
is the enriched record's JSON with the rules appended).

Delivery is what each stage has on its own: one checkpoint and one Kafka sink; a micro-batch
cut short by a crash is written again in whole, to both topics (at least once, never a gap).

The one difference: `detect` on its own also reads records that something other than enrich
wrote into `samples-enriched`, and sends the invalid ones to the dead-letter topic; the fused
stage does not read that topic at all.
"""

from __future__ import annotations

import argparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from carstream import spark_io, validation
from carstream.config import DetectSettings, StorageSettings, Topics, TriggerKind
from carstream.metrics import VALID_COUNT
from carstream.schemas import ENRICHED_EVENT, SENSOR_EVENT
from carstream.stages import detect, dims, enrich
from carstream.stages.streaming import (
    StreamJob,
    await_queries,
    require_trigger,
    stage_main,
    start_record_query,
)

STAGE = "enrich-detect"
# Not realTime: nothing has run this query (two outputs per event) in real-time mode yet.
SUPPORTED_TRIGGERS: tuple[TriggerKind, ...] = ("processingTime", "availableNow")
_RECORD = "_record"
_ENRICHED_JSON = "_enriched_json"
_HEADERS = T.ArrayType(
    T.StructType([T.StructField("key", T.StringType()), T.StructField("value", T.BinaryType())])
)


def alert_json(enriched_json: Column, rules: Column) -> Column:
    """The alert's JSON from its enriched record's JSON (`{...}`, what to_json writes) and its
    rules: the same text as to_json of the alert's struct, without serializing it again."""
    without_brace = enriched_json.substr(F.lit(1), F.length(enriched_json) - 1)
    return F.concat(without_brace, F.lit(',"rules":'), F.to_json(rules), F.lit("}"))


def _record(topic: Column, key: Column, value: Column, headers: Column) -> Column:
    return F.struct(
        topic.alias("topic"),
        key.cast("binary").alias("key"),
        value.cast("binary").alias("value"),
        headers.cast(_HEADERS).alias("headers"),
    )


def detect_counts(settings: DetectSettings) -> list[Column]:
    """What the detect stage observes, over enriched rows: the records it would read (the
    valid enriched events) and its alerts per rule."""
    valid = F.count_if(~validation.is_dead_letter()).alias(VALID_COUNT)
    return [valid, *detect.rule_counts(settings)]


def kafka_records(
    messages: DataFrame, profiles: DataFrame, settings: DetectSettings, topics: Topics
) -> DataFrame:
    """Records of `sensors-sample` -> records for `samples-enriched`, `alert-data` and the
    dead-letter topic: one per event, and a second one for an event that is an alert."""
    enriched = enrich.enrich(validation.parse_messages(messages, SENSOR_EVENT), profiles)
    observed = enriched.observe(enrich.STAGE, *validation.quality_counts()).observe(
        detect.STAGE, *detect_counts(settings)
    )
    dead = validation.is_dead_letter()
    source = F.col(validation.SOURCE)
    key = F.col("car_id").cast("string")
    # The enriched JSON is a column of its own, so that the two records that use it share it.
    rows = observed.select(
        "*",
        F.when(~dead, F.to_json(F.struct(*ENRICHED_EVENT.names))).alias(_ENRICHED_JSON),
    )
    first = F.when(
        dead,
        _record(
            F.lit(topics.dlq),
            source["key"],
            source["value"],
            validation.dead_letter_headers(enrich.STAGE),
        ),
    ).otherwise(
        _record(F.lit(topics.enriched), key, F.col(_ENRICHED_JSON), F.lit(None)),
    )
    alert = F.when(
        ~dead & detect.is_alert(settings),
        _record(
            F.lit(topics.alerts),
            key,
            alert_json(F.col(_ENRICHED_JSON), detect.fired_rules(settings)),
            F.lit(None),
        ),
    )
    return (
        rows.select(F.explode(F.array(first, alert)).alias(_RECORD))
        .where(F.col(_RECORD).isNotNull())
        .select(f"{_RECORD}.*")
    )


def start(
    spark: SparkSession, job: StreamJob, storage: StorageSettings, settings: DetectSettings
) -> list[StreamingQuery]:
    """Starts the fused query on `spark` and returns it without waiting."""
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    profiles = spark_io.snapshot(enrich.car_profiles(dims.read(spark, storage)))
    query = start_record_query(
        spark,
        job,
        STAGE,
        job.topics.sensors,
        lambda messages: kafka_records(messages, profiles, settings, job.topics),
    )
    return [query]


def run(
    spark: SparkSession, job: StreamJob, storage: StorageSettings, settings: DetectSettings
) -> None:
    """Runs the stage until its query ends (availableNow) or fails."""
    await_queries(start(spark, job, storage, settings))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    StreamJob.add_arguments(parser)
    StorageSettings.add_arguments(parser, with_s3=False)
    DetectSettings.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    job, storage = StreamJob.from_args(args, STAGE), StorageSettings.from_args(args)
    settings = DetectSettings.from_args(args)
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    return stage_main(STAGE, job, lambda spark: start(spark, job, storage, settings), storage)
