"""helm lint and helm template of the core chart, and what the rendered objects say."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from carstream import cli, toolchain
from carstream_operator import builders
from carstream_operator.model import StageSpec
from carstream_operator.settings import Settings
from tests.chart import helm
from tests.chart.helm import CHART, VALUES_FILES, by_kind, one, render

PIPELINE_TOPIC_ROLES = {"sensors", "enriched", "alerts", "counts", "dlq"}


@pytest.mark.parametrize("profile", sorted(VALUES_FILES))
def test_lint_is_clean(profile: str) -> None:
    result = helm.helm("lint", "--strict", CHART, *helm.value_args(VALUES_FILES[profile]))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("profile", sorted(VALUES_FILES))
def test_template_renders_the_whole_deployment(profile: str) -> None:
    objects = render(VALUES_FILES[profile])
    kinds = {obj["kind"] for obj in objects}
    kafka = (
        {"StatefulSet", "Service", "Job", "Secret", "ConfigMap"}
        if profile in helm.STANDALONE_PROFILES
        else {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    )
    assert kafka <= kinds
    assert {
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Pipeline",
        "NetworkPolicy",
        "Pod",
    } <= kinds
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "the chart needs no cluster rights"
    for obj in objects:
        if obj["kind"] not in {"PersistentVolume", "CustomResourceDefinition"}:
            assert obj["metadata"]["namespace"] == helm.NAMESPACE, obj["metadata"]


def test_every_topic_of_the_spec_has_a_kafka_topic_with_partitions_and_retention() -> None:
    topics = {
        t["metadata"]["labels"]["carstream.io/topic-role"]: t["spec"]
        for t in by_kind(render(), "KafkaTopic")
    }
    assert set(topics) == PIPELINE_TOPIC_ROLES
    assert topics["sensors"]["topicName"] == "sensors-sample"
    assert topics["dlq"]["topicName"] == "sensors-dlq"
    assert topics["counts"]["topicName"] == "alert-counts"
    eks = {
        t["spec"]["topicName"]: t["spec"]
        for t in by_kind(render(VALUES_FILES["eks"]), "KafkaTopic")
    }
    assert eks["sensors-sample"]["partitions"] == 12
    assert eks["sensors-sample"]["replicas"] == 3
    assert eks["sensors-sample"]["config"]["retention.ms"] == 86400000
    assert eks["sensors-sample"]["config"]["min.insync.replicas"] == 2


def _acls(user: Mapping[str, Any]) -> dict[str, set[str]]:
    """Operations allowed per (type:name) resource."""
    allowed: dict[str, set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        allowed.setdefault(f"{resource['type']}:{resource['name']}", set()).update(
            acl["operations"]
        )
    return allowed


def test_each_stage_user_may_only_touch_the_topics_it_reads_and_writes() -> None:
    users = {u["metadata"]["name"]: u for u in by_kind(render(), "KafkaUser")}
    assert set(users) == {
        "carstream-generate",
        "carstream-enrich",
        "carstream-detect",
        "carstream-count",
        "carstream-viewer",
        "carstream-operator",
    }
    group = "group:spark-kafka-source-"
    lag = "group:carstream."  # <pipeline>.<query>: the groups the stages commit to
    assert _acls(users["carstream-generate"]) == {"topic:sensors-sample": {"Write", "Describe"}}
    assert _acls(users["carstream-enrich"]) == {
        "topic:sensors-sample": {"Read", "Describe"},
        "topic:samples-enriched": {"Write", "Describe"},
        "topic:sensors-dlq": {"Write", "Describe"},
        group: {"Read"},
        lag: {"Read", "Describe"},
    }
    assert _acls(users["carstream-detect"]) == {
        "topic:samples-enriched": {"Read", "Describe"},
        "topic:alert-data": {"Write", "Describe"},
        "topic:sensors-dlq": {"Write", "Describe"},
        group: {"Read"},
        lag: {"Read", "Describe"},
    }
    assert _acls(users["carstream-count"]) == {
        "topic:alert-data": {"Read", "Describe"},
        "topic:alert-counts": {"Write", "Describe"},
        "topic:sensors-dlq": {"Write", "Describe"},
        group: {"Read"},
        lag: {"Read", "Describe"},
    }
    viewer = _acls(users["carstream-viewer"])
    assert all(ops <= {"Read", "Describe"} for ops in viewer.values())
    # the operator reads backlogs (offsets only) of the topics stages read, and their groups
    assert _acls(users["carstream-operator"]) == {
        "topic:sensors-sample": {"Describe"},
        "topic:samples-enriched": {"Describe"},
        "topic:alert-data": {"Describe"},
        lag: {"Describe"},
    }
    for user in users.values():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"


def test_kafka_is_kraft_with_a_scram_tls_listener_and_acls() -> None:
    objects = render()
    kafka = one(objects, "Kafka")["spec"]["kafka"]
    listeners = {listener["name"]: listener for listener in kafka["listeners"]}
    assert listeners == {
        "scram": {
            "name": "scram",
            "port": 9094,
            "type": "internal",
            "tls": True,
            "authentication": {"type": "scram-sha-512"},
        }
    }
    assert kafka["authorization"] == {"type": "simple"}
    assert kafka["config"]["auto.create.topics.enable"] is False
    pool = one(objects, "KafkaNodePool")["spec"]
    assert sorted(pool["roles"]) == ["broker", "controller"]
    assert pool["replicas"] == 1
    assert pool["storage"] == {"type": "ephemeral", "sizeLimit": "2Gi"}


def test_kind_adds_a_node_port_listener_advertised_as_localhost() -> None:
    kafka = one(render(VALUES_FILES["kind"]), "Kafka")["spec"]["kafka"]
    external = next(listener for listener in kafka["listeners"] if listener["name"] == "external")
    assert external["type"] == "nodeport"
    assert external["configuration"]["bootstrap"] == {"nodePort": 30092}
    assert external["configuration"]["brokers"] == [
        {"broker": 0, "nodePort": 30093, "advertisedHost": "localhost", "advertisedPort": 30093}
    ]


def test_eks_runs_three_persistent_brokers() -> None:
    objects = render(VALUES_FILES["eks"])
    pool = one(objects, "KafkaNodePool")["spec"]
    assert pool["replicas"] == 3
    assert pool["storage"]["type"] == "jbod"
    assert pool["storage"]["volumes"] == [
        {
            "id": 0,
            "type": "persistent-claim",
            "size": "100Gi",
            "class": "gp3",
            "deleteClaim": False,
            "kraftMetadata": "shared",
        }
    ]
    config = one(objects, "Kafka")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2


def test_pipeline_gets_kafka_storage_and_each_stage_its_own_user() -> None:
    spec = one(render(VALUES_FILES["kind"]), "Pipeline")["spec"]
    assert spec["kafka"] == {
        "bootstrapServers": "carstream-kafka-bootstrap.carstream.svc:9094",
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "credentialsSecret": {"name": "carstream-viewer"},
        "caSecret": {"name": "carstream-cluster-ca-cert", "key": "ca.crt"},
    }
    assert spec["serviceAccountName"] == "carstream-spark"
    assert spec["storage"] == {
        "warehouse": "file:///carstream-data/warehouse",
        "checkpointRoot": "file:///carstream-data/checkpoints",
    }
    stages = {stage["name"]: stage for stage in spec["stages"]}
    assert list(stages) == ["dims", "generate", "enrich", "detect", "count"]
    assert "kafkaCredentialsSecret" not in stages["dims"]
    for name in ("generate", "enrich", "detect", "count"):
        assert stages[name]["kafkaCredentialsSecret"] == {"name": f"carstream-{name}"}
    conf = spec["sparkConf"]
    assert conf["spark.kubernetes.driver.node.selector.carstream.io/spark-role"] == "driver"
    assert conf["spark.kubernetes.executor.node.selector.carstream.io/spark-role"] == "executor"
    for role in ("driver", "executor"):
        volume = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim.carstream-data"
        assert conf[f"{volume}.options.claimName"] == "carstream-data"
        assert conf[f"{volume}.mount.path"] == "/carstream-data"
    assert "args" not in spec
    assert "args" not in stages["dims"], "dims takes no topic flags"
    assert stages["generate"]["args"][-2:] == ["--rate", "20"]
    for name in ("generate", "enrich", "detect", "count"):
        assert "--topic-dlq=sensors-dlq" in stages[name]["args"]


@pytest.mark.parametrize("profile", sorted(VALUES_FILES))
def test_every_stage_command_the_operator_builds_is_accepted_by_the_carstream_cli(
    profile: str,
) -> None:
    """The chart's Pipeline, through the operator's own builders, into the stage CLI parser."""
    pipeline = one(render(VALUES_FILES[profile]), "Pipeline")
    specs = builders.stage_specs(pipeline["metadata"]["name"], pipeline["spec"])
    assert list(specs) == ["dims", "generate", "enrich", "detect", "count"]
    parser = cli.build_parser()
    for name, stage in specs.items():
        application = builders.application_spec(StageSpec.from_dict(stage), Settings())
        arguments = application["arguments"]
        assert arguments[:2] == ["stage", name]
        try:
            parsed = parser.parse_args(arguments)
        except SystemExit:
            pytest.fail(f"carstream rejects the {name} stage's arguments: {arguments}")
        if name in ("enrich", "detect", "count"):
            # The stage sets spark.sql.shuffle.partitions from its flag: the values' setting.
            wanted = pipeline["spec"]["sparkConf"]["spark.sql.shuffle.partitions"]
            assert parsed.shuffle_partitions == int(wanted)
        if name != "dims":
            (container,) = application["driver"]["template"]["spec"]["containers"]
            env = {item["name"]: item for item in container["env"]}
            secret = env["CARSTREAM_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
            assert secret == f"carstream-{name}"


def test_eks_uses_s3_through_irsa_and_no_keys() -> None:
    objects = render(VALUES_FILES["eks"])
    spec = one(objects, "Pipeline")["spec"]
    assert spec["storage"]["warehouse"].startswith("s3a://")
    assert spec["storage"]["checkpointRoot"].startswith("s3a://")
    spark_account = next(
        sa
        for sa in by_kind(objects, "ServiceAccount")
        if sa["metadata"]["name"] == "carstream-spark"
    )
    assert spark_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert not by_kind(objects, "Secret")
    assert not [key for key in spec["sparkConf"] if "secret" in key.lower() or "access.key" in key]


def test_an_s3_compatible_endpoint_and_its_keys_go_to_the_pipelines_storage() -> None:
    spec = one(
        render(
            set_values=[
                "storage.s3.endpoint=http://minio.minio:9000",
                "storage.s3.region=eu-west-3",
                "storage.s3.credentialsSecret=minio-keys",
            ]
        ),
        "Pipeline",
    )["spec"]
    assert spec["storage"]["s3"] == {
        "endpoint": "http://minio.minio:9000",
        "region": "eu-west-3",
        "credentialsSecret": {"name": "minio-keys"},
    }
    assert not any("s3a" in key for key in spec.get("sparkConf", {})), "the operator sets them"
    assert "s3" not in one(render(), "Pipeline")["spec"]["storage"], "AWS S3 by default"


def test_the_s3_server_of_the_release_serves_the_pipeline_and_creates_its_bucket() -> None:
    objects = render([CHART / "values-local.yaml"])
    storage = one(objects, "Pipeline")["spec"]["storage"]
    assert storage == {
        "warehouse": "s3a://carstream/warehouse",
        "checkpointRoot": "s3a://carstream/checkpoints",
        "s3": {
            "endpoint": f"http://carstream-s3.{helm.NAMESPACE}.svc:7070",
            "credentialsSecret": {"name": "carstream-s3-credentials"},
        },
    }
    secret = next(o for o in objects if o["metadata"]["name"] == "carstream-s3-credentials")
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    server = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "carstream-s3"
    )
    (container,) = server["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "carstream-s3-server:1.8.0"
    assert container["args"] == ["--port", ":7070", "--quiet", "posix", "/data"]
    assert {e["name"] for e in container["env"]} == {"ROOT_ACCESS_KEY_ID", "ROOT_SECRET_ACCESS_KEY"}
    job = next(o for o in objects if o["kind"] == "Job" and "s3-bucket" in o["metadata"]["name"])
    (setup,) = job["spec"]["template"]["spec"]["containers"]
    assert setup["command"] == [
        "carstream",
        "storage",
        "check",
        "--create-bucket",
        "--warehouse",
        "s3a://carstream/warehouse",
        "--checkpoint-root",
        "s3a://carstream/checkpoints",
        "--s3-endpoint",
        f"http://carstream-s3.{helm.NAMESPACE}.svc:7070",
    ]
    result = helm.helm(
        "template",
        "carstream",
        CHART,
        *helm.value_args([CHART / "values-local.yaml"], ["storage.warehouse=file:///data/w"]),
        check=False,
    )
    assert result.returncode != 0
    assert "storage.warehouse and storage.checkpointRoot must be s3a:// URLs" in result.stderr


def test_operator_deployment_is_locked_down() -> None:
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["command"] == ["carstream-operator"]
    env = {item["name"]: item.get("value") or item["valueFrom"] for item in container["env"]}
    assert env["CARSTREAM_OPERATOR_NAMESPACES"] == helm.NAMESPACE
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for amounts in container["resources"].values():
        assert {"cpu", "memory"} <= set(amounts)


def test_helm_test_waits_for_data_on_the_pipeline_topics() -> None:
    objects = render()
    pod = one(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][:4] == ["python", "/opt/check/check_topics.py", "--timeout", "900"]
    assert container["command"][4:] == [
        "sensors-sample",
        "samples-enriched",
        "alert-data",
        "alert-counts",
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["CARSTREAM_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "carstream-viewer",
        "key": "password",
    }
    script = next(
        cm
        for cm in by_kind(objects, "ConfigMap")
        if cm["metadata"]["name"].endswith("check-topics")
    )
    assert script["data"]["check_topics.py"] == (
        CHART / "files" / "check_topics.py"
    ).read_text().rstrip("\n")


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("kafka.nodePool.replicas=0", "at '/kafka/nodePool/replicas': minimum: got 0, want 1"),
        ("kafka.topics.sensors.partitions=0", "at '/kafka/topics/sensors/partitions': minimum"),
        (
            "kafka.nodePool.storage.type=tmpfs",
            "at '/kafka/nodePool/storage/type': value must be one of",
        ),
        (
            "storage.warehouse=/tmp/warehouse",
            "at '/storage/warehouse': '/tmp/warehouse' does not match pattern",
        ),
        (
            "storage.s3.accessKey=AKIA0000",
            "at '/storage/s3': additional properties 'accessKey' not allowed",
        ),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        (
            "pipeline.stages[0].name=Dims",
            "at '/pipeline/stages/0/name': 'Dims' does not match pattern",
        ),
        (
            "pipeline.stages[1].trigger.type=sometimes",
            "at '/pipeline/stages/1/trigger/type': value must be one of",
        ),
        (
            "pipeline.stages[0].driver.memory=lots",
            "at '/pipeline/stages/0/driver/memory': 'lots' does not match pattern",
        ),
    ],
)
def test_values_schema_rejects_bad_values_with_a_clear_message(
    assignment: str, message: str
) -> None:
    result = helm.helm("template", "carstream", CHART, "--set", assignment, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_values_schema_is_generated_from_the_pipeline_crd() -> None:
    script = toolchain.REPO_ROOT / "scripts" / "values_schema.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_uninstall_deletes_the_pipelines_first_while_the_operator_runs() -> None:
    """A pre-delete hook: `helm uninstall` would otherwise delete the operator with its
    Pipeline, whose kopf finalizer would then never go (seen on the real cluster)."""
    objects = [o for o in render() if o["metadata"]["name"] == "carstream-uninstall"]
    assert sorted(o["kind"] for o in objects) == [
        "Job", "NetworkPolicy", "Role", "RoleBinding", "ServiceAccount"
    ]  # fmt: skip
    for obj in objects:
        assert obj["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    (job,) = by_kind(objects, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "carstream_operator.uninstall"]
    assert f"--namespace={helm.NAMESPACE}" in container["command"]
    (role,) = by_kind(objects, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["carstream.io"],
            "resources": ["pipelines", "pipelinestages"],
            "verbs": ["get", "list", "delete", "patch"],
        }
    ]
