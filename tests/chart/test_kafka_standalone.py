"""kafka.mode standalone: the chart's own KRaft node, its setup Job and the users' Secrets.

Rendered with helm and checked against the same vocabulary as strimzi mode: the setup plan's
topics and ACLs must be exactly the KafkaTopic specs and KafkaUser ACLs of strimzi mode, and the
commands of the broker and the Job must be accepted by the real `carstream` CLI.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from carstream import cli
from carstream.kafka_access import parse_plan
from tests.chart import helm
from tests.chart.helm import CHART, STANDALONE_VALUES, VALUES_FILES, by_kind, one, render

KIND_STANDALONE = VALUES_FILES["kind-standalone"]
STRIMZI_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
USERS = ["carstream-generate", "carstream-enrich", "carstream-detect", "carstream-count"]


def named(objects: Sequence[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    (found,) = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"] == name]
    return found


def plan_document(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    config_map = named(objects, "ConfigMap", "carstream-kafka-setup")
    document: dict[str, Any] = yaml.safe_load(config_map["data"]["plan.yaml"])
    return document


def container(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    (found,) = workload["spec"]["template"]["spec"]["containers"]
    return found


def env_of(container_spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom")) for item in container_spec["env"]
    }


def test_standalone_renders_a_broker_a_setup_job_and_secrets_but_no_strimzi_object() -> None:
    objects = render(KIND_STANDALONE)
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & STRIMZI_KINDS
    assert {"StatefulSet", "Service", "Job", "Secret", "ConfigMap", "NetworkPolicy"} <= kinds
    services = {svc["metadata"]["name"]: svc["spec"] for svc in by_kind(objects, "Service")}
    assert services["carstream-kafka-brokers"]["clusterIP"] == "None"
    assert services["carstream-kafka-bootstrap"]["ports"][0]["port"] == 9094
    external = services["carstream-kafka-external"]
    assert external["type"] == "NodePort"
    assert [(p["nodePort"], p["targetPort"]) for p in external["ports"]] == [
        (30092, "external"),
        (30093, "external"),
    ]
    secrets = {secret["metadata"]["name"] for secret in by_kind(objects, "Secret")}
    assert secrets == {*USERS, "carstream-viewer", "carstream-operator", "carstream-kafka-admin"}


def test_strimzi_mode_is_the_default_and_renders_no_standalone_object() -> None:
    objects = render()
    assert {obj["kind"] for obj in objects} >= STRIMZI_KINDS
    assert not by_kind(objects, "StatefulSet")
    assert [job["metadata"]["name"] for job in by_kind(objects, "Job")] == [
        "carstream-uninstall"  # the pre-delete hook, in both modes
    ]
    assert not by_kind(objects, "Secret")


def test_the_setup_plan_is_exactly_strimzi_modes_topics_and_user_acls() -> None:
    """Both modes, one vocabulary: the plan holds the KafkaTopic specs and KafkaUser ACLs."""
    strimzi = render(VALUES_FILES["kind"])
    document = plan_document(render(KIND_STANDALONE))
    topics = {t["topicName"]: t for t in document["topics"]}
    for kafka_topic in by_kind(strimzi, "KafkaTopic"):
        spec = kafka_topic["spec"]
        assert topics[spec["topicName"]] == spec
    assert len(topics) == len(by_kind(strimzi, "KafkaTopic"))
    plan = parse_plan(document)
    strimzi_users = {user["metadata"]["name"]: user for user in by_kind(strimzi, "KafkaUser")}
    assert {user.name for user in plan.users} == set(strimzi_users)
    for user in plan.users:
        strimzi_acls = strimzi_users[user.name]["spec"]["authorization"]["acls"]
        from_strimzi = parse_plan({"users": [{"name": user.name, "acls": strimzi_acls}]})
        assert user.acl_bindings() == from_strimzi.user(user.name).acl_bindings()
        assert user.acl_bindings(), f"{user.name} has no ACL"
    assert plan.prune_users_with_prefix == "carstream-"


def test_user_secrets_have_the_shape_of_strimzis_kafkauser_secrets() -> None:
    objects = render(KIND_STANDALONE)
    for name in [*USERS, "carstream-viewer", "carstream-operator", "carstream-kafka-admin"]:
        secret = named(objects, "Secret", name)
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        password = base64.b64decode(secret["data"]["password"]).decode()
        assert len(password) == 32 and password.isalnum()
        jaas = base64.b64decode(secret["data"]["sasl.jaas.config"]).decode()
        assert jaas == (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{name}" password="{password}";'
        )
    users = [*USERS, "carstream-viewer", "carstream-operator"]
    passwords = {named(objects, "Secret", name)["data"]["password"] for name in users}
    assert len(passwords) == len(users), "every user has a password of its own"
    assert not by_kind(
        render(KIND_STANDALONE, ["kafka.standalone.generateSecrets=false"]), "Secret"
    )


def test_the_pipeline_uses_the_same_bootstrap_and_secrets_over_sasl_plaintext() -> None:
    objects = render(KIND_STANDALONE)
    spec = one(objects, "Pipeline")["spec"]
    assert spec["kafka"] == {
        "bootstrapServers": "carstream-kafka-bootstrap.carstream.svc:9094",
        "securityProtocol": "SASL_PLAINTEXT",
        "saslMechanism": "SCRAM-SHA-512",
        "credentialsSecret": {"name": "carstream-viewer"},
    }
    secrets = {secret["metadata"]["name"] for secret in by_kind(objects, "Secret")}
    for stage in spec["stages"]:
        if stage["name"] != "dims":
            assert stage["kafkaCredentialsSecret"]["name"] in secrets
    bootstrap = named(objects, "Service", "carstream-kafka-bootstrap")["spec"]
    pod_labels = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert bootstrap["selector"].items() <= pod_labels.items()


def test_the_broker_runs_carstream_broker_with_scram_as_a_restricted_non_root_pod() -> None:
    objects = render(KIND_STANDALONE)
    statefulset = one(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == "carstream-kafka-brokers"
    pod = statefulset["spec"]["template"]["spec"]
    kafka = container(statefulset)
    command = kafka["command"]
    assert command[:3] == ["carstream", "broker", "--sasl-scram"]
    args = cli.build_parser().parse_args(command[1:])
    assert args.host == "0.0.0.0"
    assert args.advertised_host == "$(POD_NAME).carstream-kafka-brokers.carstream.svc"
    assert args.port == 9094
    assert args.data_dir.as_posix() == "/var/lib/kafka"
    assert args.console_log
    assert dict(args.override) == {"auto.create.topics.enable": "false"}
    assert (args.external_port, str(args.external_advertised)) == (9095, "localhost:30093")
    env = env_of(kafka)
    assert env["CARSTREAM_BROKER_JARS"] == "/opt/carstream/jars/kafka-broker"
    assert env["CARSTREAM_KAFKA_USERNAME"] == "carstream-kafka-admin"
    assert env["CARSTREAM_KAFKA_PASSWORD"] == {
        "secretKeyRef": {"name": "carstream-kafka-admin", "key": "password"}
    }
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert kafka["securityContext"]["readOnlyRootFilesystem"] is True
    assert kafka["resources"]["limits"] == {
        "cpu": "1",
        "memory": "1Gi",
        "ephemeral-storage": "256Mi",
    }
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["data"]["emptyDir"] == {"sizeLimit": "2Gi"}


def test_persistent_storage_is_a_claim_per_node_that_is_kept_unless_asked() -> None:
    values = ["kafka.nodePool.storage.type=persistent-claim", "kafka.nodePool.storage.class=gp3"]
    statefulset = one(render((STANDALONE_VALUES,), values), "StatefulSet")["spec"]
    (claim,) = statefulset["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["storageClassName"] == "gp3"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert statefulset["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    volumes = [volume["name"] for volume in statefulset["template"]["spec"]["volumes"]]
    assert volumes == ["tmp"]
    deleted = one(
        render((STANDALONE_VALUES,), [*values, "kafka.nodePool.storage.deleteClaim=true"]),
        "StatefulSet",
    )["spec"]
    assert deleted["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_without_the_external_listener_there_is_no_node_port() -> None:
    objects = render((STANDALONE_VALUES,))
    assert "carstream-kafka-external" not in {
        s["metadata"]["name"] for s in by_kind(objects, "Service")
    }
    command = container(one(objects, "StatefulSet"))["command"]
    assert "--external-port" not in command


def test_the_setup_job_runs_kafka_setup_as_admin_with_every_users_password() -> None:
    objects = render(KIND_STANDALONE)
    jobs = [
        j
        for j in by_kind(objects, "Job")
        if "helm.sh/hook" not in j["metadata"].get("annotations", {})
    ]
    (job,) = jobs
    assert job["metadata"]["name"] == "carstream-kafka-setup-1"
    setup = container(job)
    args = cli.build_parser().parse_args(setup["command"][1:])
    assert args.command == "kafka-setup"
    mounts = {mount["name"]: mount["mountPath"] for mount in setup["volumeMounts"]}
    assert args.plan.parent.as_posix() == mounts["plan"]
    assert args.passwords_dir.as_posix() == mounts["passwords"]
    env = env_of(setup)
    assert env["CARSTREAM_BOOTSTRAP_SERVERS"] == "carstream-kafka-bootstrap.carstream.svc:9094"
    assert env["CARSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["CARSTREAM_KAFKA_USERNAME"] == "carstream-kafka-admin"
    volumes = {volume["name"]: volume for volume in job["spec"]["template"]["spec"]["volumes"]}
    projected = {
        source["secret"]["name"]: source["secret"]["items"]
        for source in volumes["passwords"]["projected"]["sources"]
    }
    plan = parse_plan(plan_document(objects))
    assert set(projected) == {user.name for user in plan.users}
    for name, items in projected.items():
        assert items == [{"key": "password", "path": name}]


def test_the_broker_and_the_setup_job_are_reachable_through_their_network_policies() -> None:
    objects = render(KIND_STANDALONE)
    pod_labels = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    broker = policies["carstream-kafka"]
    assert broker["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["port"] for p in broker["ingress"][0]["ports"]] == ["kafka", "external"]
    for name in ("carstream-kafka-setup", "carstream-check-topics"):
        to_kafka = policies[name]["egress"][0]
        assert to_kafka["to"][0]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert to_kafka["ports"] == [{"port": 9094, "protocol": "TCP"}]


def test_the_helm_test_pod_speaks_sasl_plaintext_without_a_ca() -> None:
    pod = one(render(KIND_STANDALONE), "Pod")
    test = pod["spec"]["containers"][0]
    env = env_of(test)
    assert env["CARSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert "CARSTREAM_KAFKA_CA_FILE" not in env
    assert env["CARSTREAM_KAFKA_PASSWORD"]["secretKeyRef"]["name"] == "carstream-viewer"
    assert [volume["name"] for volume in pod["spec"]["volumes"]] == ["script"]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("kafka.mode=kraft", "at '/kafka/mode': value must be one of 'strimzi', 'standalone'"),
        ("kafka.nodePool.replicas=3", "at '/kafka/nodePool/replicas': value must be 1"),
        ("kafka.replicationFactor=3", "at '/kafka/replicationFactor': value must be 1"),
        (
            "kafka.externalListener.brokerNodePorts={30093,30094}",
            "at '/kafka/externalListener/brokerNodePorts': maxItems",
        ),
        ("kafka.standalone.heap=lots", "at '/kafka/standalone/heap': 'lots' does not match"),
    ],
)
def test_the_values_schema_rejects_what_standalone_mode_cannot_do(
    assignment: str, message: str
) -> None:
    result = helm.helm(
        "template",
        "carstream",
        CHART,
        "--values",
        STANDALONE_VALUES,
        "--set",
        assignment,
        check=False,
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_strimzi_mode_accepts_what_only_standalone_mode_refuses() -> None:
    objects = render(set_values=["kafka.nodePool.replicas=3", "kafka.replicationFactor=3"])
    assert one(objects, "KafkaNodePool")["spec"]["replicas"] == 3
