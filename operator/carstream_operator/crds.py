"""The CustomResourceDefinitions of Pipeline and PipelineStage, written as YAML into the chart.

The schema of a stage appears twice (in `Pipeline.spec.stages[]` and in `PipelineStage.spec`),
so the YAML is generated from the definitions below rather than kept by hand; the YAML files in
charts/carstream/crds/ are the single source that the chart, k8s/ and the tests install, and a
unit test checks that they are what this module generates.

    python -m carstream_operator.crds           # rewrite the YAML files
    python -m carstream_operator.crds --check   # exit 1 if they differ
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from carstream.toolchain import carstream_crds_dir
from carstream_operator import resources as r
from carstream_operator.backlog import JOB_INPUTS
from carstream_operator.model import (
    DEFAULT_IMAGE_PULL_POLICY,
    DEFAULT_START_DEADLINE_SECONDS,
    KafkaConnection,
    KafkaCredentials,
    PodResources,
    RestartPolicy,
    Trigger,
)
from carstream_operator.pipeline_decisions import PIPELINE_PHASES
from carstream_operator.stage_decisions import STAGE_PHASES
from carstream_operator.wake import (
    DEFAULT_CHECK_SECONDS,
    DEFAULT_MAX_DELAY_SECONDS,
    DEFAULT_MIN_RECORDS,
    WAKE_REASONS,
)

Schema = dict[str, Any]

PIPELINE_CRD_FILE = f"{r.GROUP}_{r.PIPELINE_PLURAL}.yaml"
STAGE_CRD_FILE = f"{r.GROUP}_{r.STAGE_PLURAL}.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"

MAX_PIPELINE_NAME = 30
MAX_STAGE_NAME = 16
MAX_STAGES = 16
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SPARK_MEMORY = r"^[0-9]+[kmgtKMGT]?$"
# A Kubernetes CPU quantity as Spark's spark.kubernetes.*.request.cores takes it: 250m, 0.5, 2.
CPU_QUANTITY = r"^([1-9][0-9]{0,5}m|[0-9]{1,3}(\.[0-9]{1,3})?)$"
POSITIVE_INTEGER = "^[1-9][0-9]{0,5}$"
SPARK_INTERVAL = r"^\s*[0-9]+\s*(ms|milliseconds?|s|seconds?|m|min|minutes?|h|hours?)\s*$"
BOOTSTRAP_SERVERS = r"^[^,:\s]+:[0-9]{1,5}(,[^,:\s]+:[0-9]{1,5})*$"
S3_ENDPOINT = r"^https?://[^/\s]+/?$"

# Flags that the operator sets itself from the shared settings; a stage's `args` cannot repeat
# them (argparse would silently take the last one).
MANAGED_FLAGS = (
    "--bootstrap-servers",
    "--warehouse",
    "--checkpoint-root",
    "--checkpoint-location",
    "--trigger",
    "--trigger-interval",
    "--kafka-security-protocol",
    "--kafka-sasl-mechanism",
    "--kafka-ca-file",
    "--s3-endpoint",
    "--s3-region",
    "--pipeline",
    "--metrics-port",
    "--idle-stop-seconds",
)


def _cron_field(value: str) -> str:
    item = rf"(\*|{value}(-{value})?)(/[1-9][0-9]*)?"
    return rf"{item}(,{item})*"


_MONTH_NAMES = "(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_DAY_NAMES = "(?i:sun|mon|tue|wed|thu|fri|sat)"
_CRON_MACROS = "@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
_CRON_FIELDS = " +".join(
    _cron_field(value)
    for value in (
        "[1-5]?[0-9]",  # minute
        "(2[0-3]|1[0-9]|0?[0-9])",  # hour
        "(3[01]|[12][0-9]|0?[1-9])",  # day of month
        f"(1[0-2]|0?[1-9]|{_MONTH_NAMES})",  # month
        f"([0-7]|{_DAY_NAMES})",  # day of week
    )
)
_CRON_SECONDS = _cron_field("[1-5]?[0-9]")
CRON = f"^({_CRON_MACROS}|{_CRON_FIELDS}( +{_CRON_SECONDS})?)$"


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "format": "int64", "description": description, **extra}


def _number(description: str, **extra: Any) -> Schema:
    return {"type": "number", "description": description, **extra}


def _boolean(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def _object(
    description: str,
    properties: Schema,
    *,
    required: Sequence[str] = (),
    rules: Sequence[Schema] = (),
    **extra: Any,
) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = list(required)
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    schema.update(extra)
    return schema


def _string_map(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "string", "maxLength": 4096},
        "maxProperties": 256,
    }


def _string_list(description: str, *, max_items: int, **extra: Any) -> Schema:
    return {
        "type": "array",
        "description": description,
        "items": {"type": "string", "maxLength": 1024},
        "maxItems": max_items,
        **extra,
    }


def _rule(rule: str, message: str, field_path: str | None = None) -> Schema:
    validation: Schema = {"rule": rule, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


# ---------------------------------------------------------------------------------------------
# Shared settings: the same in Pipeline.spec and PipelineStage.spec.


def image_properties() -> Schema:
    return {
        "image": _string(
            "Container image of the stages: the carstream image, whose "
            "local:///opt/carstream/main.py runs `carstream stage NAME`.",
            minLength=1,
            maxLength=512,
        ),
        "imagePullPolicy": _string(
            "Pull policy of the driver and executor containers.",
            enum=["Always", "IfNotPresent", "Never"],
            default=DEFAULT_IMAGE_PULL_POLICY,
        ),
        "serviceAccountName": _string(
            "Service account of the Spark driver pods; it needs the rights to create executor "
            "pods, services and config maps (spark-operator's job service account). Unset: the "
            "namespace's default service account.",
            maxLength=253,
        ),
    }


def kafka_schema() -> Schema:
    return _object(
        "How the stages reach Kafka.",
        {
            "bootstrapServers": _string(
                "Bootstrap servers, host:port[,host:port] (--bootstrap-servers).",
                pattern=BOOTSTRAP_SERVERS,
                maxLength=1024,
            ),
            "securityProtocol": _string(
                "Kafka security protocol (--kafka-security-protocol).",
                enum=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
                default=KafkaConnection.security_protocol,
            ),
            "saslMechanism": _string(
                "SASL mechanism (--kafka-sasl-mechanism); needs a SASL security protocol and "
                "credentialsSecret.",
                enum=["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"],
            ),
            "credentialsSecret": _object(
                "The Secret holding the SASL password, passed to the pods as the environment "
                "variables CARSTREAM_KAFKA_USERNAME and CARSTREAM_KAFKA_PASSWORD. Strimzi's "
                "KafkaUser secret fits as it is: it is named after the user and has a "
                "`password` key.",
                {
                    "name": _string("Name of the Secret.", minLength=1, maxLength=253),
                    "username": _string(
                        "The SASL user name; default: the Secret's name (Strimzi names a "
                        "KafkaUser's secret after the user).",
                        maxLength=253,
                    ),
                    "passwordKey": _string(
                        "Key of the password in the Secret.",
                        default=KafkaCredentials.password_key,
                        minLength=1,
                    ),
                },
                required=["name"],
            ),
            "caSecret": _object(
                "A Secret holding the PEM certificate of the CA that signed the brokers' "
                "certificates (for Strimzi: <cluster>-cluster-ca-cert). It is mounted into the "
                "pods and passed as --kafka-ca-file.",
                {
                    "name": _string("Name of the Secret.", minLength=1, maxLength=253),
                    "key": _string(
                        "Key of the certificate.",
                        default=KafkaConnection.DEFAULT_CA_KEY,
                        minLength=1,
                    ),
                },
                required=["name"],
            ),
            "caFile": _string(
                "Path of a CA certificate already present in the image (--kafka-ca-file); "
                "the alternative to caSecret.",
                maxLength=1024,
            ),
        },
        required=["bootstrapServers"],
        rules=[
            _rule(
                "!has(self.saslMechanism) || self.securityProtocol.startsWith('SASL_')",
                "saslMechanism needs securityProtocol SASL_PLAINTEXT or SASL_SSL",
                ".saslMechanism",
            ),
            _rule(
                "!self.securityProtocol.startsWith('SASL_') || has(self.saslMechanism)",
                "a SASL securityProtocol needs saslMechanism",
                ".securityProtocol",
            ),
            _rule(
                "has(self.saslMechanism) == has(self.credentialsSecret)",
                "credentialsSecret is required with saslMechanism, and only then",
                ".credentialsSecret",
            ),
            _rule(
                "!(has(self.caSecret) && has(self.caFile))",
                "set caSecret or caFile, not both",
                ".caFile",
            ),
            _rule(
                "!(has(self.caSecret) || has(self.caFile)) || "
                "self.securityProtocol.endsWith('SSL')",
                "a CA certificate needs securityProtocol SSL or SASL_SSL",
                ".securityProtocol",
            ),
        ],
    )


def storage_schema() -> Schema:
    return _object(
        "Where the stages keep their data.",
        {
            "warehouse": _string(
                "Folder or s3a:// URL of the dimension tables (--warehouse).",
                minLength=1,
                maxLength=1024,
            ),
            "checkpointRoot": _string(
                "Folder or s3a:// URL under which every streaming stage keeps its checkpoint, "
                "at <checkpointRoot>/<pipeline>/<stage> (--checkpoint-location). The location "
                "never changes across restarts, so a restarted stage resumes where it stopped.",
                minLength=1,
                maxLength=1024,
            ),
            "s3": _object(
                "Which S3 the s3a:// locations are on. Unset: AWS S3, with credentials from "
                "the AWS chain of the pods (IRSA's web identity on EKS).",
                {
                    "endpoint": _string(
                        "An S3-compatible server, http(s)://host[:port] (--s3-endpoint), "
                        "reached with path-style requests.",
                        pattern=S3_ENDPOINT,
                        maxLength=1024,
                    ),
                    "region": _string(
                        "The region requests are signed for (--s3-region); default us-east-1 "
                        "with an endpoint, else the bucket's.",
                        minLength=1,
                        maxLength=64,
                    ),
                    "credentialsSecret": _object(
                        "A Secret with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                        "given to the drivers and executors as those environment variables "
                        "(for a server without web identity). Never put keys in the spec.",
                        {"name": _string("Name of the Secret.", minLength=1, maxLength=253)},
                        required=["name"],
                    ),
                },
            ),
        },
        required=["warehouse", "checkpointRoot"],
    )


def spark_conf_schema(scope: str) -> Schema:
    shuffle = r.SHUFFLE_PARTITIONS_CONF
    return {
        **_string_map(
            f"Spark configuration properties of {scope} (spark-submit --conf), e.g. "
            f"{shuffle} (the streaming stages also get it as {r.SHUFFLE_PARTITIONS_FLAG}; a "
            "checkpoint keeps the value of its first run), or for S3 on EKS with IRSA "
            "spark.hadoop.fs.s3a.aws.credentials.provider = software.amazon.awssdk.auth."
            "credentials.WebIdentityTokenFileCredentialsProvider."
        ),
        "x-kubernetes-validations": [
            _rule(
                f"!('{shuffle}' in self) || self['{shuffle}'].matches('{POSITIVE_INTEGER}')",
                f"{shuffle} must be a positive whole number, e.g. '12'",
            )
        ],
    }


# ---------------------------------------------------------------------------------------------
# One stage: in Pipeline.spec.stages[] and (with the shared settings) in PipelineStage.spec.


def trigger_schema() -> Schema:
    return _object(
        "When a streaming stage (enrich, detect, count) processes data.",
        {
            "type": _string(
                "processingTime: a micro-batch every interval, forever; availableNow: process "
                "what is there, then finish (the stage runs to completion); realTime: "
                "low-latency mode, the interval is the checkpoint interval.",
                enum=list(r.TRIGGER_TYPES),
                default=Trigger.type,
            ),
            "interval": _string(
                "Micro-batch interval (processingTime) or checkpoint interval (realTime), a "
                "number and a unit: '5 seconds', '500 milliseconds', '1 minute'.",
                pattern=SPARK_INTERVAL,
                default=Trigger.interval,
            ),
        },
        default={},
    )


def pod_schema(role: str, *, executor: bool) -> Schema:
    properties: Schema = {
        "cores": _integer(
            f"CPU cores of the {role}: the task threads Spark runs, and the pod's CPU request "
            "unless coreRequest is set.",
            minimum=1,
            maximum=64,
            default=PodResources.cores,
        ),
        "coreRequest": _string(
            f"CPU request of the {role}'s pod when it should be less than cores, a Kubernetes "
            "quantity such as 250m or 0.5 (spark.kubernetes.driver.request.cores / "
            "spark.kubernetes.executor.request.cores): a mostly idle streaming driver needs a "
            "fraction of a CPU.",
            pattern=CPU_QUANTITY,
        ),
        "memory": _string(
            f"Memory of the {role}, a Spark size such as 512m or 2g.",
            pattern=SPARK_MEMORY,
            default=PodResources.memory,
        ),
    }
    if executor:
        properties["instances"] = _integer(
            "Number of executors.", minimum=1, maximum=1000, default=PodResources.instances
        )
    return _object(f"Resources of the Spark {role}.", properties, default={})


def restart_policy_schema() -> Schema:
    return _object(
        "How a failed application is restarted: after a delay of "
        "initialBackoffSeconds * backoffFactor^(n-1) for the n-th restart, at most "
        "maxBackoffSeconds; after maxRestarts restarts the stage gives up (phase Failed). An "
        "application that has run for resetAfterSeconds without failing resets the count.",
        {
            "maxRestarts": _integer(
                "Restarts before the stage gives up; 0 never restarts.",
                minimum=0,
                maximum=1000,
                default=RestartPolicy.max_restarts,
            ),
            "initialBackoffSeconds": _number(
                "Delay before the first restart, in seconds.",
                minimum=0,
                maximum=86400,
                default=RestartPolicy.initial_backoff_seconds,
            ),
            "maxBackoffSeconds": _number(
                "Longest delay between a failure and the restart, in seconds.",
                minimum=0,
                maximum=86400,
                default=RestartPolicy.max_backoff_seconds,
            ),
            "backoffFactor": _number(
                "Factor by which the delay grows with each restart.",
                minimum=1,
                maximum=10,
                default=RestartPolicy.backoff_factor,
            ),
            "resetAfterSeconds": _number(
                "An application running this long without failing sets the restart count "
                "back to zero.",
                minimum=1,
                maximum=31536000,
                default=RestartPolicy.reset_after_seconds,
            ),
        },
        rules=[
            _rule(
                "!has(self.maxBackoffSeconds) || !has(self.initialBackoffSeconds) || "
                "self.maxBackoffSeconds >= self.initialBackoffSeconds",
                "maxBackoffSeconds must not be smaller than initialBackoffSeconds",
                ".maxBackoffSeconds",
            )
        ],
        default={},
    )


def stage_properties() -> Schema:
    """The fields a stage has both in a Pipeline and as a PipelineStage."""
    flags = ", ".join(MANAGED_FLAGS)
    return {
        "dependsOn": {
            "type": "array",
            "description": "Names of the stages that must be ready before this one starts: a "
            "run-to-completion stage (dims, generate, or trigger availableNow) when it has "
            "succeeded, a streaming stage when its application is running, any stage when it is "
            "Idle. Only the first start waits; restarts do not.",
            "items": {"type": "string", "pattern": DNS_LABEL, "maxLength": MAX_STAGE_NAME},
            "maxItems": MAX_STAGES,
            "x-kubernetes-list-type": "set",
        },
        "args": _string_list(
            f"More flags of `carstream stage JOB`, e.g. ['--rate', '100']. The flags the "
            f"operator sets itself cannot be given here: {flags}.",
            max_items=128,
        ),
        "trigger": trigger_schema(),
        "driver": pod_schema("driver", executor=False),
        "executor": pod_schema("executors", executor=True),
        "restartPolicy": restart_policy_schema(),
        "startDeadlineSeconds": _integer(
            "Seconds a new application may take to start running (spark-operator has not "
            "submitted it, or its driver pod is pending); then the stage deletes it and counts "
            "a failure.",
            minimum=1,
            maximum=86400,
            default=DEFAULT_START_DEADLINE_SECONDS,
        ),
        "timeLimitSeconds": _integer(
            "Seconds after the stage started (or a scheduled run started) at which the "
            "operator stops its application and marks the stage Succeeded with reason "
            "TimeLimitReached. Restarts do not reset the clock. Unset: no limit.",
            minimum=1,
            maximum=31536000,
        ),
        "schedule": _string(
            "Cron schedule of runs, e.g. '*/15 * * * *' (an optional sixth field gives "
            "seconds): each tick starts one availableNow run, never two at once, and the stage "
            "has no application between runs. Needs trigger.type availableNow.",
            pattern=CRON,
            maxLength=256,
        ),
        "wake": wake_schema(),
        "idleStopSeconds": _integer(
            "Serverless for a processingTime stage: after this many seconds without input "
            "rows the stage stops its queries cleanly (checkpoint intact), its application "
            "completes and the stage goes Idle with reason IdleStopped; with wake set it "
            "starts again on backlog. Unset: it runs until stopped.",
            minimum=10,
            maximum=604800,
        ),
        "suspend": _boolean(
            "Stops the application and starts none until set back to false; checkpoints are "
            "kept, so the stage resumes where it stopped. A suspended stage that resumes "
            "starts over with zero restarts and a new time limit.",
            default=False,
        ),
        "sparkConf": spark_conf_schema("this stage; they override the pipeline's"),
    }


# The jobs whose input topic the operator knows (backlog.JOB_INPUTS).
WAKE_JOBS = ", ".join(f"'{job}'" for job in JOB_INPUTS)
WAKE_JOBS_TEXT = ", ".join(JOB_INPUTS)


def wake_schema() -> Schema:
    return _object(
        "Serverless: no application while the input topic is quiet. With trigger.type "
        "availableNow (or idleStopSeconds) the operator looks at the stage's backlog (the "
        "topic's end offsets minus what the stage's consumer groups and its last drained run "
        "processed) and starts a run when it holds minRecords records or its oldest record "
        "has waited maxDelaySeconds; never two runs at once. Combines with schedule: "
        "whichever comes first.",
        {
            "minRecords": _integer(
                "Unprocessed records that start a run.",
                minimum=1,
                default=DEFAULT_MIN_RECORDS,
            ),
            "maxDelaySeconds": _integer(
                "Seconds the oldest unprocessed record may wait before a run starts, however "
                "few records there are.",
                minimum=1,
                maximum=86400,
                default=DEFAULT_MAX_DELAY_SECONDS,
            ),
            "checkSeconds": _integer(
                "Seconds between two looks at the backlog while the stage sleeps.",
                minimum=1,
                maximum=3600,
                default=DEFAULT_CHECK_SECONDS,
            ),
        },
    )


def _args_without(flag: str) -> str:
    """A CEL expression: self.args (if any) does not set `flag`."""
    return f"!has(self.args) || self.args.all(a, a != '{flag}' && !a.startsWith('{flag}='))"


SHUFFLE_FLAG_MESSAGE = (
    f"args must not set {r.SHUFFLE_PARTITIONS_FLAG}: set {r.SHUFFLE_PARTITIONS_CONF} in "
    f"sparkConf, which the operator passes on as {r.SHUFFLE_PARTITIONS_FLAG}"
)


# Why a job refuses some trigger types (r.JOB_TRIGGERS), for the API server's message.
TRIGGER_LIMITS = {
    "count": "it keeps state (windows, event_id deduplication) and Spark's real-time mode runs "
    "stateless queries only",
}


def _trigger_rules(job_path: str) -> list[Schema]:
    """A job that does not run with every trigger type refuses the others."""
    rules = []
    for job, supported in r.JOB_TRIGGERS.items():
        unsupported = [kind for kind in r.TRIGGER_TYPES if kind not in supported]
        if not unsupported:
            continue
        listed = ", ".join(f"'{kind}'" for kind in supported)
        rules.append(
            _rule(
                f"{job_path} != '{job}' || self.trigger.type in [{listed}]",
                f"the {job} job cannot run with trigger.type {' or '.join(unsupported)} "
                f"({TRIGGER_LIMITS[job]}): set trigger.type to {' or '.join(supported)}",
                ".trigger.type",
            )
        )
    return rules


def _stage_rules(job_path: str) -> list[Schema]:
    managed = ", ".join(f"'{flag}'" for flag in MANAGED_FLAGS)
    return [
        _rule(_args_without(r.SHUFFLE_PARTITIONS_FLAG), SHUFFLE_FLAG_MESSAGE, ".args"),
        *_trigger_rules(job_path),
        _rule(
            "!has(self.schedule) || self.trigger.type == 'availableNow'",
            "schedule needs trigger.type availableNow",
            ".schedule",
        ),
        _rule(
            f"!has(self.args) || self.args.all(a, ![{managed}].exists(f, a == f || "
            "a.startsWith(f + '=')))",
            "args must not set flags the operator sets from the shared settings: "
            + ", ".join(MANAGED_FLAGS),
            ".args",
        ),
        _rule(
            f"!has(self.schedule) || !({job_path} in ['dims', 'generate'])",
            "schedule is only for streaming stages (enrich, detect, count)",
            ".schedule",
        ),
        _rule(
            f"!has(self.wake) || {job_path} in [{WAKE_JOBS}]",
            f"wake reads the backlog of the input topic of {WAKE_JOBS_TEXT} only",
            ".wake",
        ),
        _rule(
            "!has(self.wake) || self.trigger.type == 'availableNow' || has(self.idleStopSeconds)",
            "wake needs trigger.type availableNow (runs that drain the backlog), or "
            "idleStopSeconds with trigger.type processingTime (a stage that stops when idle)",
            ".wake",
        ),
        _rule(
            "!has(self.idleStopSeconds) || self.trigger.type == 'processingTime'",
            "idleStopSeconds needs trigger.type processingTime (an availableNow run ends by "
            "itself once drained)",
            ".idleStopSeconds",
        ),
        _rule(
            f"!has(self.idleStopSeconds) || !({job_path} in ['dims', 'generate'])",
            "idleStopSeconds is only for streaming stages (enrich, detect, count)",
            ".idleStopSeconds",
        ),
    ]


def pipeline_stage_item_schema() -> Schema:
    properties = {
        "name": _string(
            "Name of the stage in this pipeline: a DNS label of at most "
            f"{MAX_STAGE_NAME} characters; its PipelineStage is named <pipeline>-<name>.",
            pattern=DNS_LABEL,
            maxLength=MAX_STAGE_NAME,
        ),
        "job": _string(
            "The stage job, run as `carstream stage JOB`. Default: the stage's name, which "
            "must then be one of the jobs.",
            enum=list(r.JOB_NAMES),
        ),
        **stage_properties(),
        "kafkaCredentialsSecret": {
            **kafka_schema()["properties"]["credentialsSecret"],
            "description": "This stage's own SASL credentials (e.g. the Secret of its Strimzi "
            "KafkaUser, whose ACLs cover only its topics) instead of the pipeline's "
            "kafka.credentialsSecret. Needs the pipeline's kafka.saslMechanism.",
        },
    }
    jobs = ", ".join(f"'{job}'" for job in r.JOB_NAMES)
    rules = [
        _rule(
            f"has(self.job) || self.name in [{jobs}]",
            "job is required when the stage's name is not a job name (dims, generate, enrich, "
            "detect, count)",
            ".job",
        ),
        _rule(
            "!has(self.dependsOn) || !(self.name in self.dependsOn)",
            "a stage cannot depend on itself",
            ".dependsOn",
        ),
        *_stage_rules("(has(self.job) ? self.job : self.name)"),
    ]
    return _object("One stage of the pipeline.", properties, required=["name"], rules=rules)


def _dependencies_listed_before_rule() -> str:
    """Every stage depends only on stages listed before it (so there is no cycle).

    CEL has no loop over indices, and a rule built on map() or indexOf() costs too much for
    the API server's estimate; with at most MAX_STAGES stages, one clause per index does it.
    """
    clauses = []
    for index in range(1, MAX_STAGES):
        before = ", ".join(f"self.stages[{j}].name" for j in range(index))
        stage = f"self.stages[{index}]"
        clauses.append(
            f"(size(self.stages) <= {index} || !has({stage}.dependsOn) || "
            f"{stage}.dependsOn.all(d, !self.stages.exists(t, t.name == d) || d in [{before}]))"
        )
    first = (
        "(!has(self.stages[0].dependsOn) || self.stages[0].dependsOn.all(d, "
        "!self.stages.exists(t, t.name == d)))"
    )
    return " && ".join([first, *clauses])


def pipeline_spec_schema() -> Schema:
    stages: Schema = {
        "type": "array",
        "description": "The stages, each run as its own SparkApplication. A stage may only "
        "depend on stages listed before it, which rules out cycles.",
        "items": pipeline_stage_item_schema(),
        "minItems": 1,
        "maxItems": MAX_STAGES,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    }
    properties = {
        **image_properties(),
        "kafka": kafka_schema(),
        "storage": storage_schema(),
        "args": _string_list(
            "Flags given to every stage before its own args, so every stage must accept them "
            "(dims takes no Kafka flags: put topic names in the Kafka stages' args).",
            max_items=64,
        ),
        "sparkConf": spark_conf_schema("every stage"),
        "suspend": _boolean(
            "Suspends every stage (see the stages' suspend); false leaves it to each stage.",
            default=False,
        ),
        "stages": stages,
    }
    rules = [
        _rule(
            "self.stages.all(s, !has(s.dependsOn) || "
            "s.dependsOn.all(d, self.stages.exists(t, t.name == d)))",
            "stages[].dependsOn must name stages of this pipeline",
            ".stages",
        ),
        _rule(
            _dependencies_listed_before_rule(),
            "stages[].dependsOn must name stages listed before it: a dependency cycle is not "
            "allowed",
            ".stages",
        ),
        _rule(
            "self.stages.all(s, !has(s.kafkaCredentialsSecret) || has(self.kafka.saslMechanism))",
            "stages[].kafkaCredentialsSecret needs kafka.saslMechanism",
            ".stages",
        ),
        _rule(
            "!has(self.args) || self.args.all(a, ![{flags}].exists(f, a == f || "
            "a.startsWith(f + '=')))".format(flags=", ".join(f"'{f}'" for f in MANAGED_FLAGS)),
            "args must not set flags the operator sets from the shared settings: "
            + ", ".join(MANAGED_FLAGS),
            ".args",
        ),
        _rule(_args_without(r.SHUFFLE_PARTITIONS_FLAG), SHUFFLE_FLAG_MESSAGE, ".args"),
    ]
    return _object(
        "Shared settings and the stages of one carstream pipeline.",
        properties,
        required=["image", "kafka", "storage", "stages"],
        rules=rules,
    )


def stage_spec_schema() -> Schema:
    properties = {
        "pipeline": _string(
            "Name of the Pipeline this stage belongs to; its dependsOn names other stages of "
            "that pipeline.",
            pattern=DNS_LABEL,
            maxLength=MAX_PIPELINE_NAME,
        ),
        "stage": _string(
            "Name of the stage within its pipeline.",
            pattern=DNS_LABEL,
            maxLength=MAX_STAGE_NAME,
        ),
        "job": _string("The stage job, run as `carstream stage JOB`.", enum=list(r.JOB_NAMES)),
        **image_properties(),
        "kafka": kafka_schema(),
        "storage": storage_schema(),
        **stage_properties(),
    }
    properties["args"] = _string_list(
        "Flags of `carstream stage JOB` beyond those the operator derives from the shared "
        "settings: the pipeline's args, then the stage's own.",
        max_items=192,
    )
    properties["sparkConf"] = spark_conf_schema("this stage (the pipeline's merged with its own)")
    return _object(
        "One stage of a pipeline: its SparkApplication, restarts, deadlines and schedule. "
        "Created and updated by its Pipeline.",
        properties,
        required=["pipeline", "stage", "job", "image", "kafka", "storage"],
        rules=_stage_rules("self.job"),
    )


# ---------------------------------------------------------------------------------------------
# Status


def conditions_schema() -> Schema:
    return {
        "type": "array",
        "description": "Standard conditions: Ready, Progressing, Degraded.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": _object(
            "One condition.",
            {
                "type": _string("Condition type."),
                "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
                "reason": _string("One CamelCase word."),
                "message": _string("Human-readable detail."),
                "lastTransitionTime": _string("When status last changed.", format="date-time"),
                "observedGeneration": _integer("Generation the condition was computed from."),
            },
            required=["type", "status"],
        ),
    }


def _time(description: str) -> Schema:
    return _string(description, format="date-time")


def stage_status_schema() -> Schema:
    return _object(
        "What the operator observed and decided.",
        {
            "phase": _string(
                "Pending (waiting for dependencies), Starting, Running, BackingOff (waiting to "
                "restart), Stopping (replacing the application), Scheduled (idle until the next "
                "run), Idle (no application: waiting for a backlog (wake), or stopped for want "
                "of input (idleStopSeconds)), Suspended, Succeeded, Failed.",
                enum=list(STAGE_PHASES),
            ),
            "reason": _string("Why the stage is in its phase, one CamelCase word."),
            "message": _string("Human-readable detail of the phase."),
            "ready": _boolean(
                "Whether stages depending on this one may start: succeeded (run-to-completion "
                "stages), running (streaming stages) or idle."
            ),
            "run": _integer("Number of the latest application run of this stage."),
            "application": _string("Name of the current (or last) SparkApplication."),
            "applicationState": _string("spark-operator's state of that application."),
            "restarts": _integer("Restarts since the stage started or last ran stably."),
            "specHash": _string("Hash of the application spec of the current (or last) run."),
            "startTime": _time("When the stage (or its current scheduled run) started."),
            "runningSince": _time("When the current application was first seen running."),
            "lastFailureTime": _time("When an application of this stage last failed."),
            "nextRestartTime": _time("When the stage restarts its failed application."),
            "nextRunTime": _time("When a scheduled stage starts its next run."),
            "lastSuccessTime": _time("When a run of this stage last succeeded."),
            "observedGeneration": _integer("The spec generation this status reflects."),
            "conditions": conditions_schema(),
            "backlog": _object(
                "A stage with spec.wake: the last look at its input topic.",
                {
                    "records": _integer("Unprocessed records of the input topic."),
                    "oldestRecordAgeSeconds": _number(
                        "How long the oldest unprocessed record has waited (its Kafka "
                        "timestamp), to the second."
                    ),
                    "checkTime": _time("When the backlog was read."),
                    "error": _string("Why the last read failed (Kafka unreachable...)."),
                    "failures": _integer("Reads that failed in a row (the retry backs off)."),
                },
            ),
            "wake": _object(
                "A stage with spec.wake: its last wake and what its runs drained.",
                {
                    "lastReason": _string(
                        "Why the last run started: Backlog, MaxDelay or Schedule.",
                        enum=list(WAKE_REASONS),
                    ),
                    "lastTime": _time("When the last run started."),
                    "runOffsets": _offsets_schema(
                        "The input topic's end offsets when the current run started."
                    ),
                    "drainedOffsets": _offsets_schema(
                        "End offsets a successful run started at: processed at least that far."
                    ),
                },
            ),
        },
    )


def _offsets_schema(description: str) -> Schema:
    return {
        "type": "array",
        "description": description,
        "maxItems": 10000,
        "items": _object(
            "One partition.",
            {
                "partition": _string("topic/partition"),
                "offset": _integer("An offset of that partition."),
            },
            required=["partition", "offset"],
        ),
    }


def pipeline_status_schema() -> Schema:
    return _object(
        "A summary of the stages.",
        {
            "phase": _string(
                "Pending (no stage started yet), Progressing, Running (every stage running, "
                "scheduled, idle or succeeded), Succeeded (every stage), Suspended, Failed (a "
                "stage gave up).",
                enum=list(PIPELINE_PHASES),
            ),
            "readyStages": _string(
                "Stages running, scheduled, idle or succeeded, out of all: '3/5'."
            ),
            "restarts": _integer("Restarts of all stages together."),
            "stages": {
                "type": "array",
                "description": "Each stage's phase, in the order of spec.stages.",
                "items": _object(
                    "One stage.",
                    {
                        "name": _string("Stage name."),
                        "phase": _string("The PipelineStage's phase."),
                        "reason": _string("The PipelineStage's reason."),
                        "restarts": _integer("The PipelineStage's restarts."),
                        "application": _string("Its current SparkApplication."),
                    },
                    required=["name"],
                ),
            },
            "observedGeneration": _integer("The spec generation this status reflects."),
            "conditions": conditions_schema(),
        },
    )


# ---------------------------------------------------------------------------------------------
# The CRDs


def _column(name: str, path: str, kind: str = "string", priority: int = 0, **extra: Any) -> Schema:
    column: Schema = {"name": name, "type": kind, "jsonPath": path, **extra}
    if priority:
        column["priority"] = priority
    return column


def _crd(
    *,
    kind: str,
    plural: str,
    short_name: str,
    description: str,
    spec: Schema,
    status: Schema,
    columns: list[Schema],
    root_rules: Sequence[Schema] = (),
) -> Schema:
    root = _object(
        description,
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        required=["spec"],
        rules=root_rules,
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{r.GROUP}",
            "labels": {r.LABEL_PART_OF: "carstream"},
        },
        "spec": {
            "group": r.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["carstream"],
            },
            "versions": [
                {
                    "name": r.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def pipeline_crd() -> Schema:
    name_rule = _rule(
        f"self.metadata.name.size() <= {MAX_PIPELINE_NAME} && "
        f"self.metadata.name.matches('{DNS_LABEL}')",
        f"metadata.name of a Pipeline must be a DNS label of at most {MAX_PIPELINE_NAME} "
        "characters (it prefixes the names of its stages and applications)",
    )
    return _crd(
        kind=r.PIPELINE_KIND,
        plural=r.PIPELINE_PLURAL,
        short_name=r.PIPELINE_SHORT_NAME,
        description="A carstream pipeline: shared settings and stages; the operator creates "
        "one PipelineStage per stage and reports their progress.",
        spec=pipeline_spec_schema(),
        status=pipeline_status_schema(),
        columns=[
            _column("Phase", ".status.phase"),
            _column("Ready", ".status.readyStages"),
            _column("Restarts", ".status.restarts", "integer"),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Image", ".spec.image", priority=1),
        ],
        root_rules=[name_rule],
    )


def stage_crd() -> Schema:
    return _crd(
        kind=r.STAGE_KIND,
        plural=r.STAGE_PLURAL,
        short_name=r.STAGE_SHORT_NAME,
        description="One stage of a carstream pipeline, run as one SparkApplication at a time.",
        spec=stage_spec_schema(),
        status=stage_status_schema(),
        columns=[
            _column("Pipeline", ".spec.pipeline"),
            _column("Job", ".spec.job"),
            _column("Phase", ".status.phase"),
            _column("Restarts", ".status.restarts", "integer"),
            _column("Next Run", ".status.nextRunTime"),
            _column("Backlog", ".status.backlog.records", "integer"),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Reason", ".status.reason", priority=1),
            _column("Application", ".status.application", priority=1),
            _column("Next Restart", ".status.nextRestartTime", priority=1),
        ],
    )


def kustomization() -> Schema:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [PIPELINE_CRD_FILE, STAGE_CRD_FILE],
    }


HEADER = (
    "# Generated by `python -m carstream_operator.crds` from operator/carstream_operator/crds.py:"
    "\n# edit that module, not this file.\n"
)


def render(document: Schema) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def generated_files() -> dict[str, str]:
    return {
        PIPELINE_CRD_FILE: render(pipeline_crd()),
        STAGE_CRD_FILE: render(stage_crd()),
        KUSTOMIZATION_FILE: render(kustomization()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carstream_operator.crds",
        description="Write carstream's CRDs into charts/carstream/crds/, or check them.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the files are up to date"
    )
    parser.add_argument(
        "--dir", type=Path, default=carstream_crds_dir(), help="default: %(default)s"
    )
    args = parser.parse_args(argv)
    stale = [
        name
        for name, text in generated_files().items()
        if not (args.dir / name).is_file() or (args.dir / name).read_text() != text
    ]
    if args.check:
        for name in stale:
            print(f"{args.dir / name} is not up to date: run python -m carstream_operator.crds")
        return 1 if stale else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in generated_files().items():
        (args.dir / name).write_text(text)
    print(f"wrote {', '.join(generated_files())} into {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
