"""Invalid Pipelines and PipelineStages are rejected by the API server itself, with a message
that names the field: structural schema, enums, ranges, patterns and CEL rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from carstream import toolchain
from carstream_operator import builders
from carstream_operator import resources as r
from tests.fixtures.kube import ControlPlane
from tests.operator.examples import pipeline, pipeline_spec

Spec = dict[str, Any]


@pytest.fixture
def custom(kube_control_plane: ControlPlane) -> CustomObjectsApi:
    return CustomObjectsApi(kube_control_plane.api_client())


def create_pipeline(custom: CustomObjectsApi, namespace: str, name: str, spec: Spec) -> Spec:
    created: Spec = custom.create_namespaced_custom_object(
        r.GROUP, r.VERSION, namespace, r.PIPELINE_PLURAL, pipeline(name, spec)
    )
    return created


def rejection(call: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as error:
        call()
    assert error.value.status == 422, error.value.body
    message: str = json.loads(error.value.body)["message"]
    return message


def with_stage(index: int, **fields: Any) -> Spec:
    spec = pipeline_spec()
    spec["stages"][index].update(fields)
    return spec


def cycle() -> Spec:
    spec = pipeline_spec()
    spec["stages"][1]["dependsOn"] = ["enrich"]  # generate -> enrich -> dims; dims is first
    spec["stages"][2]["dependsOn"] = ["generate"]  # ... and enrich -> generate: a cycle
    return spec


def sasl_without_credentials() -> Spec:
    return pipeline_spec(
        kafka={
            "bootstrapServers": "kafka:9093",
            "securityProtocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
        }
    )


def duplicate_stage() -> Spec:
    spec = pipeline_spec()
    spec["stages"].append(copy.deepcopy(spec["stages"][0]))
    return spec


INVALID_PIPELINES: list[tuple[str, Callable[[], Spec], list[str]]] = [
    (
        "unknown dependsOn",
        lambda: with_stage(2, dependsOn=["dims", "nosuch"]),
        ["spec.stages", "dependsOn must name stages of this pipeline"],
    ),
    ("a cycle", cycle, ["spec.stages", "dependency cycle is not allowed"]),
    (
        "depends on itself",
        lambda: with_stage(2, dependsOn=["enrich"]),
        ["spec.stages[2].dependsOn", "cannot depend on itself"],
    ),
    (
        "negative time limit",
        lambda: with_stage(1, timeLimitSeconds=-5),
        ["spec.stages[1].timeLimitSeconds", "greater than or equal to 1"],
    ),
    (
        "negative max restarts",
        lambda: with_stage(2, restartPolicy={"maxRestarts": -1}),
        ["spec.stages[2].restartPolicy.maxRestarts", "greater than or equal to 0"],
    ),
    (
        "negative backoff",
        lambda: with_stage(2, restartPolicy={"initialBackoffSeconds": -1}),
        ["spec.stages[2].restartPolicy.initialBackoffSeconds", "greater than or equal to 0"],
    ),
    (
        "maximum backoff below the initial one",
        lambda: with_stage(2, restartPolicy={"initialBackoffSeconds": 60, "maxBackoffSeconds": 5}),
        ["spec.stages[2].restartPolicy.maxBackoffSeconds", "must not be smaller"],
    ),
    (
        "bad cron",
        lambda: with_stage(4, trigger={"type": "availableNow"}, schedule="every 5 minutes"),
        ["spec.stages[4].schedule", "should match"],
    ),
    (
        "out-of-range cron",
        lambda: with_stage(4, trigger={"type": "availableNow"}, schedule="0 25 * * *"),
        ["spec.stages[4].schedule", "should match"],
    ),
    (
        "a schedule without availableNow",
        lambda: with_stage(4, schedule="*/5 * * * *"),
        ["spec.stages[4].schedule", "schedule needs trigger.type availableNow"],
    ),
    (
        "a schedule for a run-to-completion job",
        lambda: with_stage(0, trigger={"type": "availableNow"}, schedule="@daily"),
        ["spec.stages[0].schedule", "only for streaming stages"],
    ),
    (
        "wake for a processingTime stage that never stops",
        lambda: with_stage(2, wake={"minRecords": 10}),
        ["spec.stages[2].wake", "wake needs trigger.type availableNow"],
    ),
    (
        "wake for a batch job",
        lambda: with_stage(1, trigger={"type": "availableNow"}, wake={}),
        ["spec.stages[1].wake", "wake reads the backlog of the input topic of enrich, detect"],
    ),
    (
        "wake with no records",
        lambda: with_stage(2, trigger={"type": "availableNow"}, wake={"minRecords": 0}),
        ["spec.stages[2].wake.minRecords", "should be greater than or equal to 1"],
    ),
    (
        "idleStopSeconds for an availableNow stage",
        lambda: with_stage(3, trigger={"type": "availableNow"}, idleStopSeconds=60),
        ["spec.stages[3].idleStopSeconds", "needs trigger.type processingTime"],
    ),
    (
        "a short idleStopSeconds",
        lambda: with_stage(3, idleStopSeconds=2),
        ["spec.stages[3].idleStopSeconds", "should be greater than or equal to 10"],
    ),
    (
        "unknown trigger",
        lambda: with_stage(4, trigger={"type": "continuous"}),
        ["spec.stages[4].trigger.type", "Unsupported value"],
    ),
    (
        "bad trigger interval",
        lambda: with_stage(4, trigger={"interval": "soon"}),
        ["spec.stages[4].trigger.interval", "should match"],
    ),
    (
        "a stage name that is no job, without job",
        lambda: with_stage(3, name="alerts"),
        ["spec.stages[3].job", "job is required"],
    ),
    (
        "an unknown job",
        lambda: with_stage(3, job="train"),
        ["spec.stages[3].job", "Unsupported value"],
    ),
    (
        "a flag the operator sets",
        lambda: with_stage(2, args=["--checkpoint-location=/tmp/x"]),
        ["spec.stages[2].args", "must not set flags the operator sets"],
    ),
    (
        "count in realTime mode",
        lambda: with_stage(4, trigger={"type": "realTime", "interval": "5 seconds"}),
        [
            "spec.stages[4].trigger.type",
            "the count job cannot run with trigger.type realTime",
            "set trigger.type to processingTime or availableNow",
        ],
    ),
    (
        "the count job under another name in realTime mode",
        lambda: with_stage(4, name="windows", job="count", trigger={"type": "realTime"}),
        ["spec.stages[4].trigger.type", "the count job cannot run with trigger.type realTime"],
    ),
    (
        "shuffle partitions as a stage flag",
        lambda: with_stage(2, args=["--shuffle-partitions", "8"]),
        ["spec.stages[2].args", "set spark.sql.shuffle.partitions in sparkConf"],
    ),
    (
        "shuffle partitions as a pipeline flag",
        lambda: pipeline_spec(args=["--shuffle-partitions=8"]),
        ["spec.args", "must not set --shuffle-partitions"],
    ),
    (
        "shuffle partitions that are no number",
        lambda: pipeline_spec(sparkConf={"spark.sql.shuffle.partitions": "many"}),
        ["spec.sparkConf", "spark.sql.shuffle.partitions must be a positive whole number"],
    ),
    (
        "a stage's zero shuffle partitions",
        lambda: with_stage(3, sparkConf={"spark.sql.shuffle.partitions": "0"}),
        ["spec.stages[3].sparkConf", "must be a positive whole number"],
    ),
    (
        "a core request that is no quantity",
        lambda: with_stage(2, driver={"coreRequest": "half"}),
        ["spec.stages[2].driver.coreRequest", "should match"],
    ),
    (
        "zero executors",
        lambda: with_stage(2, executor={"instances": 0}),
        ["spec.stages[2].executor.instances", "greater than or equal to 1"],
    ),
    (
        "bad memory",
        lambda: with_stage(2, driver={"memory": "lots"}),
        ["spec.stages[2].driver.memory", "should match"],
    ),
    ("no stages", lambda: pipeline_spec(stages=[]), ["spec.stages", "at least 1 items"]),
    ("duplicate stage names", duplicate_stage, ["spec.stages[5]", "Duplicate value"]),
    (
        "SASL without credentials",
        sasl_without_credentials,
        ["spec.kafka.credentialsSecret", "credentialsSecret is required with saslMechanism"],
    ),
    (
        "a stage's own Kafka user without SASL",
        lambda: with_stage(2, kafkaCredentialsSecret={"name": "carstream-enrich"}),
        ["spec.stages", "kafkaCredentialsSecret needs kafka.saslMechanism"],
    ),
    (
        "bad bootstrap servers",
        lambda: pipeline_spec(kafka={"bootstrapServers": "kafka"}),
        ["spec.kafka.bootstrapServers", "should match"],
    ),
    (
        "no image",
        lambda: {k: v for k, v in pipeline_spec().items() if k != "image"},
        ["spec.image", "Required value"],
    ),
    (
        "an S3 endpoint without a scheme",
        lambda: pipeline_spec(
            storage={
                "warehouse": "s3a://b/w",
                "checkpointRoot": "s3a://b/c",
                "s3": {"endpoint": "minio:9000"},
            }
        ),
        ["spec.storage.s3.endpoint", "should match"],
    ),
]


@pytest.mark.parametrize(
    ("make_spec", "expected"),
    [(make, expected) for _, make, expected in INVALID_PIPELINES],
    ids=[case for case, _, _ in INVALID_PIPELINES],
)
def test_invalid_pipelines_are_rejected_naming_the_field(
    custom: CustomObjectsApi,
    kube_namespace: str,
    make_spec: Callable[[], Spec],
    expected: list[str],
) -> None:
    message = rejection(lambda: create_pipeline(custom, kube_namespace, "bad", make_spec()))
    for part in expected:
        assert part in message, message


def test_a_long_pipeline_name_is_rejected(custom: CustomObjectsApi, kube_namespace: str) -> None:
    message = rejection(lambda: create_pipeline(custom, kube_namespace, "p" * 31, pipeline_spec()))
    assert "metadata.name of a Pipeline must be a DNS label of at most 30" in message


def test_a_valid_pipeline_is_stored_with_its_defaults(
    custom: CustomObjectsApi, kube_namespace: str
) -> None:
    spec = pipeline_spec()
    spec["stages"][4].update(trigger={"type": "availableNow"}, schedule="*/15 * * * *")
    # The stateless stages may run in real-time mode; a pod may request part of a CPU.
    spec["stages"][3].update(trigger={"type": "realTime"}, executor={"coreRequest": "500m"})
    spec["stages"][2].update(driver={"coreRequest": "0.25"})
    # serverless: a wake on backlog with defaults, an idle stop that wakes on backlog
    spec["stages"][4].update(wake={"minRecords": 500})
    spec["stages"][2].update(idleStopSeconds=300, wake={})
    created = create_pipeline(custom, kube_namespace, "demo", spec)
    assert created["spec"]["stages"][4]["wake"] == {
        "minRecords": 500,
        "maxDelaySeconds": 300,
        "checkSeconds": 10,
    }
    assert created["spec"]["stages"][3]["trigger"] == {"type": "realTime", "interval": "5 seconds"}
    assert created["spec"]["stages"][3]["executor"]["coreRequest"] == "500m"
    stage = created["spec"]["stages"][2]
    assert stage["restartPolicy"] == {
        "maxRestarts": 5,
        "initialBackoffSeconds": 10,
        "maxBackoffSeconds": 300,
        "backoffFactor": 2,
        "resetAfterSeconds": 600,
    }
    assert stage["trigger"] == {"type": "processingTime", "interval": "5 seconds"}
    assert stage["driver"] == {"cores": 1, "memory": "1g", "coreRequest": "0.25"}
    assert stage["executor"] == {"cores": 1, "memory": "1g", "instances": 1}
    assert stage["startDeadlineSeconds"] == 600
    assert stage["suspend"] is False
    assert created["spec"]["kafka"]["securityProtocol"] == "PLAINTEXT"
    assert created["spec"]["imagePullPolicy"] == "IfNotPresent"


def test_an_invalid_pipeline_stage_is_rejected_too(
    custom: CustomObjectsApi, kube_namespace: str
) -> None:
    stage_spec = builders.stage_specs("demo", pipeline_spec())["count"]
    stage_spec["timeLimitSeconds"] = 0
    stage_spec["schedule"] = "*/5 * * * *"
    body = builders.pipeline_stage("demo", kube_namespace, stage_spec)
    message = rejection(
        lambda: custom.create_namespaced_custom_object(
            r.GROUP, r.VERSION, kube_namespace, r.STAGE_PLURAL, body
        )
    )
    assert "spec.timeLimitSeconds" in message
    assert "spec.schedule" in message and "availableNow" in message


@pytest.mark.parametrize(
    ("job", "accepted"), [("enrich", True), ("detect", True), ("count", False)]
)
def test_only_the_stateless_jobs_may_run_in_real_time_mode_as_pipeline_stages(
    custom: CustomObjectsApi, kube_namespace: str, job: str, accepted: bool
) -> None:
    stage_spec = builders.stage_specs("demo", pipeline_spec())[job]
    stage_spec["trigger"] = {"type": "realTime", "interval": "5 seconds"}
    body = builders.pipeline_stage("demo", kube_namespace, stage_spec)

    def create() -> Spec:
        created: Spec = custom.create_namespaced_custom_object(
            r.GROUP, r.VERSION, kube_namespace, r.STAGE_PLURAL, body
        )
        return created

    if accepted:
        assert create()["spec"]["trigger"]["type"] == "realTime"
    else:
        message = rejection(create)
        assert "spec.trigger.type" in message
        assert f"the {job} job cannot run with trigger.type realTime" in message


def test_the_documented_example_is_a_valid_pipeline(
    custom: CustomObjectsApi, kube_namespace: str
) -> None:
    readme = (toolchain.REPO_ROOT / "README.md").read_text()
    section = readme.split("## Custom resources", 1)[1]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    created = custom.create_namespaced_custom_object(
        r.GROUP, r.VERSION, kube_namespace, r.PIPELINE_PLURAL, example
    )
    stages = builders.stage_specs(created["metadata"]["name"], created["spec"])
    assert list(stages) == ["dims", "generate", "enrich", "detect", "count"]
    assert stages["count"]["schedule"] == "*/15 * * * *"
    assert stages["enrich"]["kafka"]["credentialsSecret"] == {
        "name": "carstream-enrich",
        "passwordKey": "password",
    }
