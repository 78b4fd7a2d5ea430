"""Prometheus metrics of the operator, served on the metrics port at /metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from carstream_operator.stage_decisions import STAGE_PHASES

RECONCILES = Counter(
    "carstream_operator_reconciles",
    "Reconciles of Pipelines and PipelineStages, by kind and result (ok or error).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "carstream_operator_reconcile_duration_seconds",
    "Duration of one reconcile, API calls included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
APPLICATIONS_CREATED = Counter(
    "carstream_operator_applications_created",
    "SparkApplications created, first runs and restarts alike.",
    ["namespace", "pipeline", "stage"],
)
STAGE_RESTARTS = Counter(
    "carstream_operator_stage_restarts",
    "Restarts of a stage's application after a failure.",
    ["namespace", "pipeline", "stage"],
)
STAGE_DEADLINES = Counter(
    "carstream_operator_stage_deadlines",
    "Applications stopped at a deadline: time-limit (the stage is done) or start-deadline "
    "(counted as a failure).",
    ["namespace", "pipeline", "stage", "deadline"],
)
STAGE_GAVE_UP = Counter(
    "carstream_operator_stage_gave_up",
    "Stages (or scheduled runs) that failed after their last allowed restart.",
    ["namespace", "pipeline", "stage"],
)
STAGE_WAKES = Counter(
    "carstream_operator_stage_wakes",
    "Runs a sleeping stage (spec.wake) started, by reason: Backlog, MaxDelay or Schedule.",
    ["namespace", "pipeline", "stage", "reason"],
)
BACKLOG_RECORDS = Gauge(
    "carstream_operator_stage_backlog_records",
    "Unprocessed records of a sleeping stage's input topic at the operator's last look.",
    ["namespace", "pipeline", "stage"],
)
BACKLOG_AGE = Gauge(
    "carstream_operator_stage_backlog_oldest_age_seconds",
    "Age of the oldest unprocessed record at the operator's last look (0: none).",
    ["namespace", "pipeline", "stage"],
)
BACKLOG_ERRORS = Counter(
    "carstream_operator_stage_backlog_errors",
    "Looks at a stage's backlog that failed (Kafka unreachable, not authorized...).",
    ["namespace", "pipeline", "stage"],
)
STAGE_PHASE = Gauge(
    "carstream_operator_stage_phase",
    "1 for the current phase of each stage, 0 for the others.",
    ["namespace", "pipeline", "stage", "phase"],
)


def set_stage_phase(namespace: str, pipeline: str, stage: str, phase: str) -> None:
    for candidate in STAGE_PHASES:
        STAGE_PHASE.labels(namespace, pipeline, stage, candidate).set(
            1 if candidate == phase else 0
        )


def forget_stage(namespace: str, pipeline: str, stage: str) -> None:
    for candidate in STAGE_PHASES:
        with contextlib.suppress(KeyError):
            STAGE_PHASE.remove(namespace, pipeline, stage, candidate)
    for gauge in (BACKLOG_RECORDS, BACKLOG_AGE):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, pipeline, stage)
