"""The child objects: a PipelineStage per stage of a Pipeline, a SparkApplication per run.

Plain functions from specs to dicts; owner references are added by the handlers (kopf.adopt).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from carstream_operator import resources as r
from carstream_operator.model import StageSpec
from carstream_operator.settings import Settings

# Fields of Pipeline.spec that every PipelineStage gets as they are.
SHARED_FIELDS = ("image", "imagePullPolicy", "serviceAccountName", "kafka", "storage")
USERNAME_ENV = "CARSTREAM_KAFKA_USERNAME"
PASSWORD_ENV = "CARSTREAM_KAFKA_PASSWORD"
AWS_KEY_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# s3a's settings for storage.s3 (the same as `carstream stage` sets from --s3-endpoint and
# --s3-region; here as Spark configuration too, so that executors start with them). The AWS
# SDK's default chain: environment, profile, web identity (IRSA), container, instance.
S3A_CREDENTIALS_PROVIDER = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"


def stage_labels(pipeline: str, stage: str, job: str) -> dict[str, str]:
    return {
        r.LABEL_MANAGED_BY: r.MANAGER_NAME,
        r.LABEL_PART_OF: "carstream",
        r.LABEL_PIPELINE: pipeline,
        r.LABEL_STAGE: stage,
        r.LABEL_JOB: job,
    }


# ---------------------------------------------------------------------------------------------
# Pipeline -> PipelineStage


def stage_specs(pipeline: str, spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The spec of each stage's PipelineStage, by stage name, in the order of spec.stages."""
    shared = {key: spec[key] for key in SHARED_FIELDS if key in spec}
    pipeline_args = list(spec.get("args") or [])
    pipeline_conf = dict(spec.get("sparkConf") or {})
    result: dict[str, dict[str, Any]] = {}
    for item in spec["stages"]:
        stage = {key: value for key, value in item.items() if key != "name"}
        stage_credentials = stage.pop("kafkaCredentialsSecret", None)
        stage.update(
            pipeline=pipeline,
            stage=item["name"],
            job=item.get("job") or item["name"],
            args=pipeline_args + list(item.get("args") or []),
            sparkConf={**pipeline_conf, **(item.get("sparkConf") or {})},
            suspend=bool(spec.get("suspend")) or bool(item.get("suspend")),
            **shared,
        )
        if stage_credentials is not None and "kafka" in stage:
            stage["kafka"] = {**stage["kafka"], "credentialsSecret": stage_credentials}
        if not stage["args"]:
            del stage["args"]
        if not stage["sparkConf"]:
            del stage["sparkConf"]
        result[item["name"]] = stage
    return result


def pipeline_stage(pipeline: str, namespace: str, stage_spec: Mapping[str, Any]) -> dict[str, Any]:
    """A PipelineStage object (without its owner reference)."""
    return {
        "apiVersion": r.API_VERSION,
        "kind": r.STAGE_KIND,
        "metadata": {
            "name": r.stage_object_name(pipeline, stage_spec["stage"]),
            "namespace": namespace,
            "labels": stage_labels(pipeline, stage_spec["stage"], stage_spec["job"]),
        },
        "spec": dict(stage_spec),
    }


# ---------------------------------------------------------------------------------------------
# PipelineStage -> SparkApplication


def stage_arguments(spec: StageSpec, settings: Settings) -> list[str]:
    """`stage JOB` and its flags (DEVELOPERS.md): only those the job accepts."""
    arguments = ["stage", spec.job]
    uses_kafka = spec.job != "dims"
    if uses_kafka:
        kafka = spec.kafka
        arguments += ["--bootstrap-servers", kafka.bootstrap_servers]
        arguments += ["--kafka-security-protocol", kafka.security_protocol]
        if kafka.sasl_mechanism:
            arguments += ["--kafka-sasl-mechanism", kafka.sasl_mechanism]
        if kafka.ca_secret:
            ca_file = f"{settings.kafka_ca_mount_path.rstrip('/')}/{kafka.ca_secret.key}"
            arguments += ["--kafka-ca-file", ca_file]
        elif kafka.ca_file:
            arguments += ["--kafka-ca-file", kafka.ca_file]
    if uses_kafka:
        # Names the metrics and the consumer groups (<pipeline>.<query>) after the Pipeline.
        arguments += ["--pipeline", spec.pipeline]
        if settings.stage_metrics_port:
            arguments += ["--metrics-port", str(settings.stage_metrics_port)]
    if spec.s3.endpoint:
        arguments += ["--s3-endpoint", spec.s3.endpoint]
    if spec.s3.region:
        arguments += ["--s3-region", spec.s3.region]
    if spec.job in ("dims", "generate", "enrich"):
        arguments += ["--warehouse", spec.warehouse]
    if spec.streaming:
        arguments += ["--checkpoint-location", spec.checkpoint_location]
        arguments += ["--trigger", spec.trigger.type]
        if spec.trigger.type != "availableNow":
            arguments += ["--trigger-interval", spec.trigger.interval]
        if spec.idle_stop_seconds is not None:
            arguments += ["--idle-stop-seconds", str(spec.idle_stop_seconds)]
        # The stage sets spark.sql.shuffle.partitions from this flag: without it, the
        # stage's default would replace the sparkConf value.
        if partitions := spec.spark_conf.get(r.SHUFFLE_PARTITIONS_CONF):
            arguments += [r.SHUFFLE_PARTITIONS_FLAG, partitions]
    return arguments + list(spec.args)


# The containers spark-operator tells Spark to build on in the pod templates
# (spark.kubernetes.{driver,executor}.podTemplateContainerName).
DRIVER_CONTAINER = "spark-kubernetes-driver"
EXECUTOR_CONTAINER = "spark-kubernetes-executor"
# Why a driver failed, for the stage's status (driver_failure): a failing `carstream stage`
# writes `Reason: message` to the container's termination message file (the default path,
# /dev/termination-log). FallbackToLogsOnError rather than the default File: a message the stage
# wrote always wins, and when there is none because the driver failed before carstream's code
# could write it (spark-submit's JVM, the image, an import error, a kill), Kubernetes puts the
# end of the driver's log there instead, so the stage shows its last line rather than only
# spark-operator's exit code.
DRIVER_TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"
METRICS_PORT_NAME = "metrics"
# What Pod Security "restricted" asks of every container.
CONTAINER_SECURITY_CONTEXT: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def pod_security_context(settings: Settings) -> dict[str, Any]:
    """The pod-level part of Pod Security "restricted": the image's Spark user, never root."""
    uid = settings.spark_user_id
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def kafka_env(spec: StageSpec) -> list[dict[str, Any]]:
    """CARSTREAM_KAFKA_USERNAME and CARSTREAM_KAFKA_PASSWORD (a reference to the Secret, never
    the password), for the stages that use Kafka with SASL."""
    credentials = spec.kafka.credentials
    if spec.job == "dims" or credentials is None:
        return []
    return [
        {"name": USERNAME_ENV, "value": credentials.username},
        {
            "name": PASSWORD_ENV,
            "valueFrom": {
                "secretKeyRef": {"name": credentials.secret_name, "key": credentials.password_key}
            },
        },
    ]


def s3_env(spec: StageSpec) -> list[dict[str, Any]]:
    """The AWS keys of storage.s3.credentialsSecret, for the AWS SDKs' environment chain."""
    secret = spec.s3.credentials_secret
    if not secret or not spec.uses_s3:
        return []
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in AWS_KEY_ENVS
    ]


def s3a_spark_conf(spec: StageSpec) -> dict[str, str]:
    """s3a's Hadoop settings as Spark configuration, for a stage with an s3a:// location."""
    if not spec.uses_s3:
        return {}
    conf = {"spark.hadoop.fs.s3a.aws.credentials.provider": S3A_CREDENTIALS_PROVIDER}
    if spec.s3.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = spec.s3.endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    region = spec.s3.region or ("us-east-1" if spec.s3.endpoint else None)
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


def pod_template(spec: StageSpec, role: str, settings: Settings) -> dict[str, Any]:
    """The pod template of the driver or the executors. spark-operator hands it to
    spark-submit as a file (spark.kubernetes.{driver,executor}.podTemplateFile) and Spark
    builds the pod on it, so the security context and the Kafka credentials reach the pods
    without spark-operator's mutating webhook."""
    container: dict[str, Any] = {
        "name": DRIVER_CONTAINER if role == "driver" else EXECUTOR_CONTAINER,
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
    }
    if env := kafka_env(spec) + s3_env(spec):
        container["env"] = env
    if role == "driver":
        container["terminationMessagePolicy"] = DRIVER_TERMINATION_MESSAGE_POLICY
        if spec.job != "dims" and settings.stage_metrics_port:
            # Spark builds its driver container on this one and keeps the port: a PodMonitor
            # finds the stage's metrics by its name.
            container["ports"] = [
                {
                    "name": METRICS_PORT_NAME,
                    "containerPort": settings.stage_metrics_port,
                    "protocol": "TCP",
                }
            ]
    return {"spec": {"securityContext": pod_security_context(settings), "containers": [container]}}


def _pod(spec: StageSpec, role: str, settings: Settings) -> dict[str, Any]:
    """The driver or executor part of a SparkApplication: only fields that spark-operator turns
    into spark-submit settings (docs/custom-resources.md lists them), none that need its
    webhook."""
    resources = spec.driver if role == "driver" else spec.executor
    pod: dict[str, Any] = {
        "cores": resources.cores,
        "memory": resources.memory,
        "labels": stage_labels(spec.pipeline, spec.stage, spec.job),
        "template": pod_template(spec, role, settings),
    }
    if resources.core_request:
        pod["coreRequest"] = resources.core_request
    if role == "executor":
        pod["instances"] = resources.instances
    if spec.service_account_name:
        pod["serviceAccount"] = spec.service_account_name
    kafka = spec.kafka
    if spec.job != "dims" and kafka.ca_secret:
        pod["secrets"] = [
            {
                "name": kafka.ca_secret.name,
                "path": settings.kafka_ca_mount_path,
                "secretType": "Generic",
            }
        ]
    return pod


def application_spec(spec: StageSpec, settings: Settings) -> dict[str, Any]:
    """The spec of a stage's SparkApplication: the same for every run of the same stage spec."""
    app: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "sparkVersion": settings.spark_version,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "mainApplicationFile": settings.main_application_file,
        "arguments": stage_arguments(spec, settings),
        # The stage restarts failed runs itself, with its own backoff and limits.
        "restartPolicy": {"type": "Never"},
        "driver": _pod(spec, "driver", settings),
        "executor": _pod(spec, "executor", settings),
    }
    if spark_conf := {**s3a_spark_conf(spec), **spec.spark_conf}:
        app["sparkConf"] = spark_conf
    return app


def application_spec_hash(app_spec: Mapping[str, Any]) -> str:
    encoded = json.dumps(app_spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def spark_application(
    *,
    name: str,
    namespace: str,
    stage_object: str,
    spec: StageSpec,
    run: int,
    restarts: int,
    settings: Settings,
) -> dict[str, Any]:
    """Run number `run` of a stage (without its owner reference)."""
    app_spec = application_spec(spec, settings)
    labels = {
        **stage_labels(spec.pipeline, spec.stage, spec.job),
        r.LABEL_COMPONENT: "stage",
        r.LABEL_STAGE_OBJECT: stage_object,
        r.LABEL_RUN: str(run),
    }
    return {
        "apiVersion": r.SPARK_API_VERSION,
        "kind": r.SPARK_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                r.ANNOTATION_RUN: str(run),
                r.ANNOTATION_RESTARTS: str(restarts),
                r.ANNOTATION_SPEC_HASH: application_spec_hash(app_spec),
            },
        },
        "spec": app_spec,
    }
