"""Pipelines used by the operator tests."""

from __future__ import annotations

import copy
from typing import Any

from carstream_operator import resources as r

FIVE_STAGES: list[dict[str, Any]] = [
    {"name": "dims", "args": ["--num-cars", "20"]},
    {"name": "generate", "dependsOn": ["dims"], "args": ["--rate", "50"]},
    {"name": "enrich", "dependsOn": ["dims"]},
    {"name": "detect", "dependsOn": ["enrich"], "args": ["--speed-limit", "130"]},
    {
        "name": "count",
        "dependsOn": ["detect"],
        "trigger": {"type": "processingTime", "interval": "30 seconds"},
    },
]


def pipeline_spec(stages: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "carstream:0.1.0",
        "serviceAccountName": "carstream-spark",
        "kafka": {"bootstrapServers": "carstream-kafka-bootstrap:9092"},
        "storage": {
            "warehouse": "s3a://carstream-test/data",
            "checkpointRoot": "s3a://carstream-test/checkpoints",
        },
        "sparkConf": {"spark.sql.shuffle.partitions": "4"},
        "stages": copy.deepcopy(FIVE_STAGES if stages is None else stages),
    }
    spec.update(overrides)
    return spec


def pipeline(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": r.API_VERSION,
        "kind": r.PIPELINE_KIND,
        "metadata": {"name": name},
        "spec": spec if spec is not None else pipeline_spec(),
    }
