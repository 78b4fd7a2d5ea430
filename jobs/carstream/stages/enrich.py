"""Stage 5, enrichment: sensor events joined with the car dimensions (sensors-sample ->
samples-enriched).

Each valid event gets driver_id, brand_name, model_name, color_name and expected_gear
(round(speed / 30), half up) and is written as JSON keyed by car_id, the six sensor fields
first. An invalid event, or one whose car is not in the cars dimension, goes to the
dead-letter topic with its original bytes and the reason in its headers. The dimensions are
read once, when the query starts.
"""

from __future__ import annotations

import argparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from carstream import spark_io, validation
from carstream.config import StorageSettings, Topics, TriggerKind
from carstream.schemas import ENRICHED_EVENT, SENSOR_EVENT
from carstream.stages import dims
from carstream.stages.streaming import (
    StreamJob,
    await_queries,
    require_trigger,
    stage_main,
    start_record_query,
)

STAGE = "enrich"
SUPPORTED_TRIGGERS: tuple[TriggerKind, ...] = ("processingTime", "availableNow", "realTime")


def expected_gear(speed: Column) -> Column:
    """round(speed / 30) rounding half up, as an int; integer arithmetic, exact for speed >= 0."""
    return F.call_function("div", speed + 15, F.lit(30)).cast("int")


def car_profiles(dimensions: dims.Dimensions) -> DataFrame:
    """One row per car: car_id, driver_id, brand_name, model_name, color_name."""
    return (
        dimensions.cars.join(dimensions.car_models, "model_id", "left")
        .join(dimensions.car_colors, "color_id", "left")
        .select(
            "car_id",
            "driver_id",
            F.col("car_brand").alias("brand_name"),
            F.col("car_model").alias("model_name"),
            "color_name",
        )
    )


def enrich(events: DataFrame, profiles: DataFrame) -> DataFrame:
    """Parsed sensor events (see validation.parse_messages) -> the same plus the enrichment
    fields. Events of cars missing from `profiles` become dead letters ("unknown car")."""
    known = profiles.withColumn("_known_car", F.lit(True))
    joined = events.join(F.broadcast(known), on="car_id", how="left")
    flagged = validation.flag(
        joined,
        F.col("_known_car").isNull(),
        F.concat(F.lit("unknown car: "), F.col("car_id").cast("string")),
    )
    valid = ~validation.is_dead_letter()
    return flagged.withColumn("expected_gear", F.when(valid, expected_gear(F.col("speed")))).drop(
        "_known_car"
    )


def kafka_records(messages: DataFrame, profiles: DataFrame, topics: Topics) -> DataFrame:
    """Records of `sensors-sample` -> records for `samples-enriched` and the dead-letter topic."""
    enriched = enrich(validation.parse_messages(messages, SENSOR_EVENT), profiles)
    observed = enriched.observe(STAGE, *validation.quality_counts())
    return validation.to_kafka_records(
        observed,
        stage=STAGE,
        output_topic=topics.enriched,
        dlq_topic=topics.dlq,
        key=F.col("car_id").cast("string"),
        value=F.to_json(F.struct(*ENRICHED_EVENT.names)),
    )


def start(spark: SparkSession, job: StreamJob, storage: StorageSettings) -> list[StreamingQuery]:
    """Starts the enrichment query on `spark` and returns it without waiting."""
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    profiles = spark_io.snapshot(car_profiles(dims.read(spark, storage)))
    query = start_record_query(
        spark,
        job,
        STAGE,
        job.topics.sensors,
        lambda messages: kafka_records(messages, profiles, job.topics),
    )
    return [query]


def run(spark: SparkSession, job: StreamJob, storage: StorageSettings) -> None:
    """Runs the stage until its query ends (availableNow) or fails."""
    await_queries(start(spark, job, storage))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    StreamJob.add_arguments(parser)
    StorageSettings.add_arguments(parser, with_s3=False)


def main(args: argparse.Namespace) -> int:
    job, storage = StreamJob.from_args(args, STAGE), StorageSettings.from_args(args)
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    return stage_main(STAGE, job, lambda spark: start(spark, job, storage), storage)
