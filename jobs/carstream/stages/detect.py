"""Stage 6, alert detection: enriched events that break the rules (samples-enriched ->
alert-data).

Rules: `speed` (speed > --speed-limit), `gear` (expected_gear != gear), `rpm`
(rpm > --rpm-limit). With --combinator any an event is an alert when at least one rule fires,
with all when every rule fires. An alert is the full enriched record plus the list of rules
that fired, e.g. "rules": ["speed", "gear"], as JSON keyed by car_id. Invalid messages go to
the dead-letter topic with the reason.
"""

from __future__ import annotations

import argparse
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from carstream import validation
from carstream.config import DetectSettings, Topics, TriggerKind
from carstream.metrics import RULE_COUNT_PREFIX
from carstream.schemas import ALERT, ENRICHED_EVENT
from carstream.stages.streaming import (
    StreamJob,
    await_queries,
    require_trigger,
    stage_main,
    start_record_query,
)

STAGE = "detect"
SUPPORTED_TRIGGERS: tuple[TriggerKind, ...] = ("processingTime", "availableNow", "realTime")


def rule_checks(settings: DetectSettings) -> dict[str, Column]:
    """Each rule's condition on an enriched event, in the order speed, gear, rpm."""
    return {
        "speed": F.col("speed") > settings.speed_limit,
        "gear": F.col("expected_gear") != F.col("gear"),
        "rpm": F.col("rpm") > settings.rpm_limit,
    }


def fired_rules(settings: DetectSettings) -> Column:
    """The names of the rules an enriched event breaks, in the order speed, gear, rpm."""
    # array_remove keeps the expression code-generated (array_compact is a lambda function).
    names = [
        F.when(check, F.lit(name)).otherwise(F.lit(""))
        for name, check in rule_checks(settings).items()
    ]
    return F.array_remove(F.array(*names), "")


def is_alert(settings: DetectSettings) -> Column:
    checks = list(rule_checks(settings).values())
    if settings.combinator == "all":
        return reduce(lambda left, right: left & right, checks)
    return reduce(lambda left, right: left | right, checks)


def rule_counts(settings: DetectSettings) -> list[Column]:
    """Aggregates for `observe` over parsed events: `alerts`, and `rule_<name>` for each rule
    (alerts that break it)."""
    alert = ~validation.is_dead_letter() & is_alert(settings)
    return [F.count_if(alert).alias("alerts")] + [
        F.count_if(alert & check).alias(RULE_COUNT_PREFIX + name)
        for name, check in rule_checks(settings).items()
    ]


def detect(events: DataFrame, settings: DetectSettings) -> DataFrame:
    """Parsed enriched events (with `reason`) -> the alerts, with the column `rules`, and the
    dead letters; events that are neither are dropped."""
    dead = validation.is_dead_letter()
    alerts_and_dead_letters = events.where(dead | is_alert(settings))
    return alerts_and_dead_letters.withColumn("rules", F.when(~dead, fired_rules(settings)))


def kafka_records(messages: DataFrame, settings: DetectSettings, topics: Topics) -> DataFrame:
    """Records of `samples-enriched` -> records for `alert-data` and the dead-letter topic."""
    parsed = validation.parse_messages(messages, ENRICHED_EVENT).observe(
        STAGE, *validation.quality_counts(), *rule_counts(settings)
    )
    return validation.to_kafka_records(
        detect(parsed, settings),
        stage=STAGE,
        output_topic=topics.alerts,
        dlq_topic=topics.dlq,
        key=F.col("car_id").cast("string"),
        value=F.to_json(F.struct(*ALERT.names)),
    )


def start(spark: SparkSession, job: StreamJob, settings: DetectSettings) -> list[StreamingQuery]:
    """Starts the detection query on `spark` and returns it without waiting."""
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    query = start_record_query(
        spark,
        job,
        STAGE,
        job.topics.enriched,
        lambda messages: kafka_records(messages, settings, job.topics),
    )
    return [query]


def run(spark: SparkSession, job: StreamJob, settings: DetectSettings) -> None:
    """Runs the stage until its query ends (availableNow) or fails."""
    await_queries(start(spark, job, settings))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    StreamJob.add_arguments(parser)
    DetectSettings.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    job, settings = StreamJob.from_args(args, STAGE), DetectSettings.from_args(args)
    require_trigger(STAGE, job.stream, SUPPORTED_TRIGGERS)
    return stage_main(STAGE, job, lambda spark: start(spark, job, settings))
