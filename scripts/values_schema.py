"""Write charts/carstream/values.schema.json: the hand-written rules below plus the schema of
a pipeline stage, taken from the Pipeline CRD in charts/carstream/crds/ so the two never drift.

    .venv/bin/python scripts/values_schema.py           # rewrite the file
    .venv/bin/python scripts/values_schema.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "carstream"
SCHEMA_FILE = CHART / "values.schema.json"
PIPELINE_CRD = CHART / "crds" / "carstream.io_pipelines.yaml"

Schema = dict[str, Any]

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def obj(properties: Schema, required: Sequence[str] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def string_map(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "string"},
    }


def quantity() -> Schema:
    return {"anyOf": [{"type": "string", "pattern": QUANTITY}, {"type": "number", "minimum": 0}]}


def resources() -> Schema:
    amounts = obj(
        {"cpu": quantity(), "memory": quantity(), "ephemeral-storage": quantity()},
        required=["cpu", "memory"],
    )
    return obj(
        {"requests": amounts, "limits": amounts},
        required=["requests", "limits"],
        description="requests and limits: cpu and memory required, ephemeral-storage optional",
    )


def topic() -> Schema:
    return obj(
        {
            "name": string(
                pattern=r"^[a-zA-Z0-9._-]{1,249}$",
                description="Kafka topic name: letters, digits, '.', '_', '-'",
            ),
            "partitions": integer(1, 10000),
            "retentionMs": integer(-1),
        },
        required=["name", "partitions", "retentionMs"],
    )


def without_kubernetes_keywords(node: Any) -> Any:
    """The CRD's schema as plain JSON Schema: CEL rules and list-type hints dropped (the API
    server checks those at install), unknown fields rejected; descriptions left to the CRD."""
    if isinstance(node, list):
        return [without_kubernetes_keywords(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {
        key: without_kubernetes_keywords(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key not in {"default", "format", "description"}
    }
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def stage_schema(pipeline_crd: Path) -> Schema:
    crd = yaml.safe_load(pipeline_crd.read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    stages = root["properties"]["spec"]["properties"]["stages"]
    return without_kubernetes_keywords(stages)


KAFKA_MODES = ["strimzi", "standalone"]


def standalone_kafka() -> Schema:
    """Settings of kafka.mode standalone: the chart's own single KRaft node."""
    return obj(
        {
            "generateSecrets": {
                "type": "boolean",
                "description": "true: the chart generates the Kafka users' password Secrets "
                "and keeps them; false: you create them before installing",
            },
            "jarsDir": string(
                pattern=r"^/.+", description="where the image holds the kafka-broker jars"
            ),
            "heap": string(
                pattern=r"^[0-9]+[kmgKMG]?$", description="JVM heap, such as 512m or 1g"
            ),
            "ephemeralStorage": obj(
                {"request": quantity(), "limit": quantity()}, required=["request", "limit"]
            ),
            "setup": obj(
                {
                    "waitSeconds": integer(1, 86400),
                    "backoffLimit": integer(0, 100),
                    "resources": resources(),
                },
                required=["waitSeconds", "backoffLimit", "resources"],
            ),
        },
        required=["generateSecrets", "jarsDir", "heap", "ephemeralStorage", "setup"],
    )


def standalone_kafka_rules() -> Schema:
    """What standalone mode cannot do: one node, so one replica of everything."""
    one = {"const": 1, "description": "standalone Kafka is a single node: 1"}
    return {
        "if": {"properties": {"mode": {"const": "standalone"}}, "required": ["mode"]},
        "then": {
            "properties": {
                "replicationFactor": one,
                "minInsyncReplicas": one,
                "nodePool": {"properties": {"replicas": one}},
                "externalListener": {"properties": {"brokerNodePorts": {"maxItems": 1}}},
            }
        },
    }


LABEL_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


def monitoring() -> Schema:
    """PodMonitors, PrometheusRule, Grafana dashboard and lineage (docs/observability.md)."""
    enabled = {"type": "boolean"}
    return obj(
        {
            "labels": {
                "type": "object",
                "description": "labels of the PodMonitors and the PrometheusRule",
                "propertyNames": {"pattern": LABEL_NAME},
                "additionalProperties": string(pattern=LABEL_VALUE, maxLength=63),
            },
            "podMonitors": obj(
                {
                    "enabled": enabled,
                    "interval": string(
                        pattern=r"^([0-9]+(ms|s|m|h))+$", description="a duration, such as 30s"
                    ),
                },
                required=["enabled"],
            ),
            "prometheusRule": obj({"enabled": enabled}, required=["enabled"]),
            "lineage": obj(
                {
                    "transport": {"enum": ["off", "console", "http"]},
                    "url": string(
                        pattern=r"^(https?://[^/\s]+(/\S*)?)?$",
                        description="the OpenLineage endpoint (Marquez: http://marquez:5000)",
                    ),
                    "namespace": string(description="the job namespace (default: the pipeline)"),
                },
                required=["transport"],
            ),
            "dashboard": obj(
                {
                    "enabled": enabled,
                    "label": string(
                        pattern=LABEL_NAME, description="the label Grafana's sidecar looks for"
                    ),
                    "labelValue": string(pattern=LABEL_VALUE, maxLength=63),
                    "annotations": string_map("annotations of the dashboard's ConfigMap"),
                },
                required=["enabled"],
            ),
        },
        required=["podMonitors", "prometheusRule", "dashboard"],
    )


def values_schema(pipeline_crd: Path = PIPELINE_CRD) -> Schema:
    kafka = obj(
        {
            "mode": string(
                enum=KAFKA_MODES,
                description="strimzi: Strimzi's cluster operator runs Kafka; standalone: the "
                "chart runs one KRaft node itself, for clusters without Strimzi",
            ),
            "standalone": standalone_kafka(),
            "clusterName": string(
                pattern=r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
                maxLength=40,
                description="a DNS label of at most 40 characters, or empty",
            ),
            "version": string(pattern=r"^4\.[0-9]+\.[0-9]+$"),
            "replicationFactor": integer(1, 32767),
            "minInsyncReplicas": integer(1, 32767),
            "listenerPort": integer(9092, 65535),
            "consumerGroupPrefix": string(minLength=1),
            "nodePool": obj(
                {
                    "replicas": integer(1, 100),
                    "storage": obj(
                        {
                            "type": string(enum=["ephemeral", "persistent-claim"]),
                            "sizeLimit": quantity(),
                            "size": quantity(),
                            "class": string(),
                            "deleteClaim": {"type": "boolean"},
                        },
                        required=["type"],
                    ),
                    "resources": resources(),
                },
                required=["replicas", "storage", "resources"],
            ),
            "entityOperator": obj({"resources": resources()}, required=["resources"]),
            "externalListener": obj(
                {
                    "enabled": {"type": "boolean"},
                    "advertisedHost": string(minLength=1),
                    "bootstrapNodePort": integer(30000, 32767),
                    "brokerNodePorts": {
                        "type": "array",
                        "items": integer(30000, 32767),
                        "minItems": 1,
                        "uniqueItems": True,
                    },
                },
                required=["enabled"],
            ),
            "topics": obj(
                {role: topic() for role in ("sensors", "enriched", "alerts", "counts", "dlq")},
                required=["sensors", "enriched", "alerts", "counts", "dlq"],
            ),
        },
        required=[
            "mode",
            "version",
            "replicationFactor",
            "minInsyncReplicas",
            "nodePool",
            "topics",
        ],
        allOf=[standalone_kafka_rules()],
    )
    storage = obj(
        {
            "warehouse": string(
                pattern=r"^(s3a|file|hdfs|gs|abfss?)://.+",
                description="a URL: s3a://bucket/path, or file:///path on sharedVolume",
            ),
            "checkpointRoot": string(pattern=r"^(s3a|file|hdfs|gs|abfss?)://.+"),
            "sharedVolume": obj(
                {
                    "enabled": {"type": "boolean"},
                    "hostPath": string(pattern=r"^(/.*)?$"),
                    "storageClass": string(),
                    "size": quantity(),
                    "mountPath": string(pattern=r"^/.+"),
                },
                required=["enabled"],
            ),
            "s3": obj(
                {
                    "endpoint": string(pattern=r"^(https?://[^/\s]+/?)?$"),
                    "region": string(),
                    "credentialsSecret": string(
                        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
                        description="the name of a Secret, never a key",
                    ),
                }
            ),
            "s3Server": obj(
                {
                    "enabled": {"type": "boolean"},
                    "image": obj(
                        {
                            "repository": string(minLength=1),
                            "tag": string(minLength=1),
                            "pullPolicy": string(enum=["Always", "IfNotPresent", "Never"]),
                        },
                        required=["repository", "tag"],
                    ),
                    "port": integer(1, 65535),
                    "nodePort": {"anyOf": [{"type": "null"}, integer(30000, 32767)]},
                    "sizeLimit": quantity(),
                    "resources": resources(),
                    "bucketJob": obj(
                        {"backoffLimit": integer(0, 100), "resources": resources()},
                        required=["resources"],
                    ),
                },
                required=["enabled"],
            ),
        },
        required=["warehouse", "checkpointRoot"],
    )
    pipeline = obj(
        {
            "create": {"type": "boolean"},
            "name": string(
                pattern=r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
                maxLength=30,
                description="a DNS label of at most 30 characters, or empty",
            ),
            "args": {"type": "array", "items": string()},
            "sparkConf": string_map("Spark configuration of every stage"),
            "suspend": {"type": "boolean"},
            "stages": stage_schema(pipeline_crd),
        },
        required=["create", "stages"],
    )
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "carstream chart values",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "image",
            "runAsUser",
            "kafka",
            "storage",
            "spark",
            "operator",
            "pipeline",
            "test",
            "uninstall",
        ],
        "properties": {
            "global": {"type": "object"},
            "image": obj(
                {
                    "repository": string(minLength=1),
                    "tag": string(),
                    "pullPolicy": string(enum=["Always", "IfNotPresent", "Never"]),
                },
                required=["repository", "pullPolicy"],
            ),
            "imagePullSecrets": {
                "type": "array",
                "items": obj({"name": string(minLength=1)}, required=["name"]),
            },
            "nameOverride": string(),
            "runAsUser": integer(1, 2147483647),
            "fullnameOverride": string(maxLength=40),
            "kafka": kafka,
            "storage": storage,
            "spark": obj(
                {
                    "serviceAccount": obj(
                        {"name": string(), "annotations": string_map("ServiceAccount annotations")}
                    ),
                    "driverNodeSelector": string_map("node labels of the drivers' nodes"),
                    "executorNodeSelector": string_map("node labels of the executors' nodes"),
                    "runAsUser": integer(1, 2147483647),
                }
            ),
            "operator": obj(
                {
                    "metricsPort": integer(1024, 65535),
                    "livenessPort": integer(1024, 65535),
                    "stageMetricsPort": integer(0, 65535),
                    "apiServerPorts": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": integer(1, 65535),
                    },
                    "resources": resources(),
                    "nodeSelector": string_map("node labels of the operator's node"),
                    "tolerations": {"type": "array", "items": {"type": "object"}},
                    "affinity": {"type": "object"},
                },
                required=["metricsPort", "livenessPort", "apiServerPorts", "resources"],
            ),
            "pipeline": pipeline,
            "monitoring": monitoring(),
            "test": obj(
                {
                    "topics": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": string(enum=["sensors", "enriched", "alerts", "counts", "dlq"]),
                    },
                    "timeoutSeconds": integer(1, 86400),
                    "resources": resources(),
                },
                required=["topics", "timeoutSeconds", "resources"],
            ),
            "uninstall": obj(
                {
                    "timeoutSeconds": integer(0, 3600),
                    "resources": resources(),
                },
                required=["timeoutSeconds", "resources"],
            ),
        },
    }


def render(pipeline_crd: Path = PIPELINE_CRD) -> str:
    return json.dumps(values_schema(pipeline_crd), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="values_schema.py", description="Write or check charts/carstream/values.schema.json."
    )
    parser.add_argument("--check", action="store_true", help="only check that it is up to date")
    parser.add_argument(
        "--crd", type=Path, default=PIPELINE_CRD, help="the Pipeline CRD (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    text = render(args.crd)
    if args.check:
        if not SCHEMA_FILE.is_file() or SCHEMA_FILE.read_text() != text:
            print(f"{SCHEMA_FILE} is out of date: run .venv/bin/python scripts/values_schema.py")
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
