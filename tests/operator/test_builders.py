"""The child objects: PipelineStages from a Pipeline, SparkApplications from a stage."""

from __future__ import annotations

import pytest

from carstream_operator import builders
from carstream_operator import resources as r
from carstream_operator.model import StageSpec
from carstream_operator.settings import Settings
from tests.operator import schemas
from tests.operator.examples import pipeline_spec

SETTINGS = Settings()
SECURED_KAFKA = {
    "bootstrapServers": "carstream-kafka-bootstrap:9093",
    "securityProtocol": "SASL_SSL",
    "saslMechanism": "SCRAM-SHA-512",
    "credentialsSecret": {"name": "carstream-app"},
    "caSecret": {"name": "carstream-cluster-ca-cert"},
}


def stage(name: str, **pipeline_overrides: object) -> StageSpec:
    specs = builders.stage_specs("demo", pipeline_spec(**pipeline_overrides))
    return StageSpec.from_dict(specs[name])


def application(
    spec: StageSpec, run: int = 1, restarts: int = 0, settings: Settings = SETTINGS
) -> dict:
    return builders.spark_application(
        name=r.application_name("demo-" + spec.stage, run),
        namespace="ns",
        stage_object="demo-" + spec.stage,
        spec=spec,
        run=run,
        restarts=restarts,
        settings=settings,
    )


@pytest.mark.parametrize("job", ["dims", "generate", "enrich", "detect", "count"])
@pytest.mark.parametrize("kafka", [None, SECURED_KAFKA], ids=["plaintext", "sasl-ssl"])
def test_applications_are_valid_spark_applications(job: str, kafka: dict | None) -> None:
    overrides = {"kafka": kafka} if kafka else {}
    app = application(stage(job, **overrides))
    assert schemas.errors(schemas.spark_application_validator(), app) == []
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    spec = app["spec"]
    assert (spec["type"], spec["pythonVersion"], spec["mode"]) == ("Python", "3", "cluster")
    assert spec["sparkVersion"] == "4.2.0"
    assert spec["mainApplicationFile"] == "local:///opt/carstream/main.py"
    assert spec["arguments"][:2] == ["stage", job]
    assert spec["restartPolicy"] == {"type": "Never"}
    assert spec["driver"]["serviceAccount"] == "carstream-spark"
    assert spec["sparkConf"] == {
        "spark.sql.shuffle.partitions": "4",
        # s3a:// locations on AWS: the SDK's default chain (IRSA's web identity on EKS).
        "spark.hadoop.fs.s3a.aws.credentials.provider": builders.S3A_CREDENTIALS_PROVIDER,
    }


def test_an_s3_compatible_endpoint_reaches_s3a_boto3_and_the_pods_environment() -> None:
    storage = {
        "warehouse": "s3a://data/warehouse",
        "checkpointRoot": "s3a://data/checkpoints",
        "s3": {
            "endpoint": "http://s3.storage.svc:7070/",
            "credentialsSecret": {"name": "s3-keys"},
        },
    }
    for job in ("dims", "generate", "enrich", "detect", "count"):
        spec = application(stage(job, storage=storage))["spec"]
        arguments = spec["arguments"]
        assert arguments[arguments.index("--s3-endpoint") + 1] == "http://s3.storage.svc:7070"
        assert "--s3-region" not in arguments, "the stage's default: us-east-1 with an endpoint"
        assert spec["sparkConf"] == {
            "spark.sql.shuffle.partitions": "4",
            "spark.hadoop.fs.s3a.aws.credentials.provider": builders.S3A_CREDENTIALS_PROVIDER,
            "spark.hadoop.fs.s3a.endpoint": "http://s3.storage.svc:7070",
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        }
        for role in ("driver", "executor"):
            (container,) = spec[role]["template"]["spec"]["containers"]
            keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
            assert keys["AWS_ACCESS_KEY_ID"] == {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}
            assert keys["AWS_SECRET_ACCESS_KEY"] == {
                "name": "s3-keys",
                "key": "AWS_SECRET_ACCESS_KEY",
            }
    # The pipeline's sparkConf wins; a region is passed on; folders need no s3a at all.
    storage["s3"] = {"endpoint": "https://s3.example.com", "region": "eu-west-3"}
    custom = {"spark.sql.shuffle.partitions": "4", "spark.hadoop.fs.s3a.path.style.access": "false"}
    spec = application(stage("enrich", storage=storage, sparkConf=custom))["spec"]
    assert spec["sparkConf"]["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert spec["sparkConf"]["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-3"
    assert spec["arguments"][spec["arguments"].index("--s3-region") + 1] == "eu-west-3"
    folders = {"warehouse": "file:///data/warehouse", "checkpointRoot": "file:///data/ck"}
    spec = application(stage("enrich", storage=folders))["spec"]
    assert spec["sparkConf"] == {"spark.sql.shuffle.partitions": "4"}
    assert "--s3-endpoint" not in spec["arguments"]


# The fields of a SparkApplication's driver and executor that spark-operator 2.5.2 turns into
# spark-submit settings itself (internal/controller/sparkapplication/submission.go): they work
# without its mutating webhook. Every other pod field (env, envFrom, securityContext,
# podSecurityContext, nodeSelector, affinity, tolerations, volumeMounts of spec.volumes,
# sidecars, ...) is applied by the webhook only (internal/webhook/sparkpod_defaulter.go).
NATIVE_POD_FIELDS = {
    "cores",
    "coreRequest",
    "coreLimit",
    "memory",
    "memoryOverhead",
    "image",
    "serviceAccount",
    "javaOptions",
    "labels",
    "annotations",
    "envVars",
    "envSecretKeyRefs",
    "secrets",
    "template",
    "instances",
    "deleteOnTermination",
}


@pytest.mark.parametrize("job", ["dims", "generate", "enrich", "detect", "count"])
def test_applications_need_no_webhook(job: str) -> None:
    spec = application(stage(job, kafka=SECURED_KAFKA))["spec"]
    for role in ("driver", "executor"):
        assert set(spec[role]) <= NATIVE_POD_FIELDS, set(spec[role]) - NATIVE_POD_FIELDS
    assert not {"volumes", "nodeSelector"} & set(spec)


@pytest.mark.parametrize("role", ["driver", "executor"])
def test_pods_meet_pod_security_restricted_through_their_templates(role: str) -> None:
    template = application(stage("enrich"))["spec"][role]["template"]
    pod = template["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 185,
        "runAsGroup": 185,
        "fsGroup": 185,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    # The names spark-operator passes as spark.kubernetes.*.podTemplateContainerName.
    expected = "spark-kubernetes-driver" if role == "driver" else "spark-kubernetes-executor"
    assert container["name"] == expected
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }
    other_uid = Settings(spark_user_id=1000)
    app = builders.application_spec(stage("enrich"), other_uid)
    assert app[role]["template"]["spec"]["securityContext"]["runAsUser"] == 1000


def test_a_core_request_below_the_cores_reaches_the_application() -> None:
    stages = pipeline_spec()["stages"]
    stages[2]["driver"] = {"cores": 1, "coreRequest": "250m", "memory": "512m"}
    stages[2]["executor"] = {"cores": 2, "coreRequest": "0.5"}
    spec = application(stage("enrich", stages=stages))["spec"]
    assert (spec["driver"]["cores"], spec["driver"]["coreRequest"]) == (1, "250m")
    assert (spec["executor"]["cores"], spec["executor"]["coreRequest"]) == (2, "0.5")
    assert "coreRequest" not in application(stage("detect"))["spec"]["driver"]


def test_the_driver_container_reports_why_it_failed_in_its_termination_message() -> None:
    for job in ("dims", "generate", "enrich"):
        spec = application(stage(job))["spec"]
        (driver,) = spec["driver"]["template"]["spec"]["containers"]
        assert driver["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert "terminationMessagePath" not in driver, "the default, /dev/termination-log"
        (executor,) = spec["executor"]["template"]["spec"]["containers"]
        assert "terminationMessagePolicy" not in executor


def test_streaming_stages_get_the_shuffle_partitions_of_their_spark_conf() -> None:
    """spark.sql.shuffle.partitions is a Spark property and a stage flag; the stage sets the
    property from the flag, so the operator passes the sparkConf value on as the flag."""
    for job in ("enrich", "detect", "count"):
        arguments = application(stage(job))["spec"]["arguments"]
        assert arguments[arguments.index("--shuffle-partitions") + 1] == "4"
    for job in ("dims", "generate"):
        assert "--shuffle-partitions" not in application(stage(job))["spec"]["arguments"]
    stages = pipeline_spec()["stages"]
    stages[3]["sparkConf"] = {"spark.sql.shuffle.partitions": "12"}
    detect = application(stage("detect", stages=stages))["spec"]
    assert detect["arguments"][detect["arguments"].index("--shuffle-partitions") + 1] == "12"
    assert detect["sparkConf"]["spark.sql.shuffle.partitions"] == "12"
    unset = application(stage("count", sparkConf={}))["spec"]["arguments"]
    assert "--shuffle-partitions" not in unset, "the stage's own default then"


def test_streaming_stages_get_a_stable_checkpoint_and_their_trigger() -> None:
    arguments = application(stage("count"))["spec"]["arguments"]
    assert arguments == [
        "stage",
        "count",
        "--bootstrap-servers",
        "carstream-kafka-bootstrap:9092",
        "--kafka-security-protocol",
        "PLAINTEXT",
        "--pipeline",
        "demo",
        "--metrics-port",
        "9464",
        "--checkpoint-location",
        "s3a://carstream-test/checkpoints/demo/count",
        "--trigger",
        "processingTime",
        "--trigger-interval",
        "30 seconds",
        "--shuffle-partitions",
        "4",
    ]
    again = application(stage("count"), run=7, restarts=3)["spec"]["arguments"]
    assert again == arguments


def test_stages_serve_metrics_on_a_named_driver_port() -> None:
    detect = application(stage("detect"))["spec"]
    (driver,) = detect["driver"]["template"]["spec"]["containers"]
    assert driver["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    (executor,) = detect["executor"]["template"]["spec"]["containers"]
    assert "ports" not in executor
    dims = application(stage("dims"))["spec"]
    assert "ports" not in dims["driver"]["template"]["spec"]["containers"][0]
    off = application(stage("detect"), settings=Settings(stage_metrics_port=0))["spec"]
    assert "--metrics-port" not in off["arguments"] and "--pipeline" in off["arguments"]
    assert "ports" not in off["driver"]["template"]["spec"]["containers"][0]


def test_each_job_gets_only_the_flags_it_accepts() -> None:
    dims = application(stage("dims"))["spec"]["arguments"]
    assert dims == ["stage", "dims", "--warehouse", "s3a://carstream-test/data", "--num-cars", "20"]
    generate = application(stage("generate"))["spec"]["arguments"]
    assert "--warehouse" in generate and "--checkpoint-location" not in generate
    assert generate[-2:] == ["--rate", "50"]
    detect = application(stage("detect"))["spec"]["arguments"]
    assert "--warehouse" not in detect and "--checkpoint-location" in detect
    enrich = application(stage("enrich"))["spec"]["arguments"]
    assert "--warehouse" in enrich and "--checkpoint-location" in enrich


def test_an_available_now_trigger_has_no_interval() -> None:
    stages = pipeline_spec()["stages"]
    stages[4]["trigger"] = {"type": "availableNow"}
    arguments = application(stage("count", stages=stages))["spec"]["arguments"]
    assert "--trigger-interval" not in arguments
    assert arguments[arguments.index("--trigger") + 1] == "availableNow"


def test_an_idle_stop_reaches_the_stage_as_its_flag() -> None:
    stages = pipeline_spec()["stages"]
    stages[3].update(idleStopSeconds=120, wake={"minRecords": 50})
    arguments = application(stage("detect", stages=stages))["spec"]["arguments"]
    assert arguments[arguments.index("--idle-stop-seconds") + 1] == "120"
    assert "--idle-stop-seconds" not in application(stage("enrich"))["spec"]["arguments"]


def test_kafka_credentials_and_ca_come_from_secrets() -> None:
    app = application(stage("enrich", kafka=SECURED_KAFKA))
    arguments = app["spec"]["arguments"]
    assert arguments[arguments.index("--kafka-security-protocol") + 1] == "SASL_SSL"
    assert arguments[arguments.index("--kafka-sasl-mechanism") + 1] == "SCRAM-SHA-512"
    assert arguments[arguments.index("--kafka-ca-file") + 1] == "/etc/carstream/kafka-ca/ca.crt"
    for role in ("driver", "executor"):
        pod = app["spec"][role]
        assert "env" not in pod, "driver.env and executor.env need spark-operator's webhook"
        (container,) = pod["template"]["spec"]["containers"]
        assert container["env"] == [
            {"name": "CARSTREAM_KAFKA_USERNAME", "value": "carstream-app"},
            {
                "name": "CARSTREAM_KAFKA_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "carstream-app", "key": "password"}},
            },
        ]
        assert pod["secrets"] == [
            {
                "name": "carstream-cluster-ca-cert",
                "path": "/etc/carstream/kafka-ca",
                "secretType": "Generic",
            }
        ]
    # The password itself is never in the application.
    assert "password=" not in str(app)


def test_dims_gets_no_kafka_settings() -> None:
    app = application(stage("dims", kafka=SECURED_KAFKA))
    assert "secrets" not in app["spec"]["driver"]
    assert builders.kafka_env(stage("dims", kafka=SECURED_KAFKA)) == []
    for role in ("driver", "executor"):
        assert "env" not in app["spec"][role]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--kafka") for a in app["spec"]["arguments"])


def test_runs_are_labelled_and_carry_their_run_and_restarts() -> None:
    app = application(stage("enrich"), run=4, restarts=2)
    metadata = app["metadata"]
    assert metadata["name"] == "demo-enrich-4"
    assert metadata["labels"][r.LABEL_PIPELINE] == "demo"
    assert metadata["labels"][r.LABEL_STAGE] == "enrich"
    assert metadata["labels"][r.LABEL_STAGE_OBJECT] == "demo-enrich"
    assert metadata["labels"][r.LABEL_MANAGED_BY] == "carstream-operator"
    assert metadata["annotations"][r.ANNOTATION_RUN] == "4"
    assert metadata["annotations"][r.ANNOTATION_RESTARTS] == "2"
    assert app["spec"]["driver"]["labels"][r.LABEL_STAGE] == "enrich"


def test_the_spec_hash_changes_with_the_spec_and_not_with_the_run() -> None:
    spec = stage("enrich")
    first = application(spec, run=1)["metadata"]["annotations"][r.ANNOTATION_SPEC_HASH]
    later = application(spec, run=9, restarts=4)["metadata"]["annotations"][r.ANNOTATION_SPEC_HASH]
    assert first == later
    changed = stage("enrich", sparkConf={"spark.sql.shuffle.partitions": "8"})
    assert application(changed)["metadata"]["annotations"][r.ANNOTATION_SPEC_HASH] != first


def test_stage_specs_merge_the_shared_settings_into_each_stage() -> None:
    spec = pipeline_spec(args=["--topic-sensors", "cars"], suspend=True)
    spec["stages"][3]["sparkConf"] = {"spark.sql.shuffle.partitions": "2", "spark.x": "y"}
    specs = builders.stage_specs("demo", spec)
    assert list(specs) == ["dims", "generate", "enrich", "detect", "count"]
    detect = specs["detect"]
    assert (
        detect["pipeline"] == "demo" and detect["stage"] == "detect" and detect["job"] == "detect"
    )
    assert detect["image"] == "carstream:0.1.0"
    assert detect["kafka"] == spec["kafka"]
    assert detect["args"] == ["--topic-sensors", "cars", "--speed-limit", "130"]
    assert detect["sparkConf"] == {"spark.sql.shuffle.partitions": "2", "spark.x": "y"}
    assert detect["suspend"] is True
    assert "name" not in detect
    validator = schemas.carstream_validator("pipelinestages")
    for stage_spec in specs.values():
        obj = builders.pipeline_stage("demo", "ns", stage_spec)
        assert schemas.errors(validator, obj) == []
        assert obj["metadata"]["name"] == f"demo-{stage_spec['stage']}"


def test_a_stage_may_use_its_own_kafka_user() -> None:
    stages = [{"name": "enrich", "kafkaCredentialsSecret": {"name": "carstream-enrich"}}]
    specs = builders.stage_specs("demo", pipeline_spec(kafka=SECURED_KAFKA, stages=stages))
    assert "kafkaCredentialsSecret" not in specs["enrich"]
    assert specs["enrich"]["kafka"]["credentialsSecret"] == {"name": "carstream-enrich"}
    assert specs["enrich"]["kafka"]["caSecret"] == SECURED_KAFKA["caSecret"]
    env = builders.kafka_env(StageSpec.from_dict(specs["enrich"]))
    assert env[0] == {"name": "CARSTREAM_KAFKA_USERNAME", "value": "carstream-enrich"}
    assert env[1]["valueFrom"]["secretKeyRef"]["name"] == "carstream-enrich"


def test_a_stage_may_run_a_job_under_another_name() -> None:
    stages = [{"name": "fast-alerts", "job": "detect", "args": ["--speed-limit", "90"]}]
    specs = builders.stage_specs("demo", pipeline_spec(stages=stages))
    assert specs["fast-alerts"]["job"] == "detect"
    arguments = application(StageSpec.from_dict(specs["fast-alerts"]))["spec"]["arguments"]
    assert arguments[:2] == ["stage", "detect"]
    assert "s3a://carstream-test/checkpoints/demo/fast-alerts" in arguments


def test_example_pipelines_are_valid_pipelines() -> None:
    validator = schemas.carstream_validator("pipelines")
    obj = {"apiVersion": r.API_VERSION, "kind": "Pipeline", "metadata": {"name": "demo"}}
    assert schemas.errors(validator, {**obj, "spec": pipeline_spec()}) == []
    assert schemas.errors(validator, {**obj, "spec": pipeline_spec(kafka=SECURED_KAFKA)}) == []
