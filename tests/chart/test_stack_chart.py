"""The umbrella chart carstream-stack: carstream + Strimzi + spark-operator.

Its Chart.yaml names the real repositories (what `helm dependency build` fetches for users).
Here, scripts/stack_chart.py assembles it offline with the core chart and spark-operator's
real 2.5.2 chart (from its Go module, in the toolchain cache); Strimzi's chart cannot be
downloaded here and is left out. What is checked: the dependencies and their conditions, the
values files (the core chart's own values under `carstream:`, spark-operator's under its
name), every rendered object of both charts against its schema and kube-score, the guard on
spark-operator's job namespaces, and `helm install` into the real API server.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from carstream import toolchain
from tests.chart import helm, schemas
from tests.chart.helm import CHART, STACK_CHART, STACK_VALUES_FILES, by_kind, one
from tests.chart.test_install import restricted_namespace
from tests.chart.test_schemas import kubeconform
from tests.chart.test_security import findings, kube_score
from tests.fixtures.kube import ControlPlane

STACK = yaml.safe_load((STACK_CHART / "Chart.yaml").read_text())
CORE = yaml.safe_load((CHART / "Chart.yaml").read_text())
SPARK_OPERATOR_CHART = f"spark-operator-{toolchain.spark_operator_version()}"
PROFILES = ["kind", "eks", "local"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return helm.assemble_stack(tmp_path_factory.mktemp("stack"))


def spark_operator_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        obj
        for obj in objects
        if (obj["metadata"].get("labels") or {}).get("helm.sh/chart") == SPARK_OPERATOR_CHART
    ]


def umbrella_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The umbrella's own templates: the NetworkPolicy of spark-operator's pods, and the Role
    (with its binding) that lets spark-submit in spark-operator's controller create the
    drivers' NetworkPolicies."""
    return [
        obj
        for obj in objects
        if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == STACK["name"]
    ]


CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}


def in_release_namespace(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as helm installs them: spark-operator's chart leaves the namespace of its
    namespaced objects to helm (the release namespace)."""
    result = copy.deepcopy(objects)
    for obj in result:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"].setdefault("namespace", helm.NAMESPACE)
    return result


def test_helm_reads_the_dependencies() -> None:
    listed = helm.helm("dependency", "list", STACK_CHART).stdout
    rows = [line.split() for line in listed.splitlines()[1:] if line.strip()]
    assert [row[:3] for row in rows] == [
        ["carstream", CORE["version"], "file://../carstream"],
        ["strimzi-kafka-operator", "1.2.x", "oci://quay.io/strimzi-helm"],
        ["spark-operator", "2.5.x", "https://kubeflow.github.io/spark-operator"],
    ]


def test_operators_are_optional_and_the_core_chart_is_not() -> None:
    dependencies = {dependency["name"]: dependency for dependency in STACK["dependencies"]}
    assert "condition" not in dependencies["carstream"]
    assert dependencies["strimzi-kafka-operator"]["condition"] == "strimzi-kafka-operator.enabled"
    assert dependencies["spark-operator"]["condition"] == "spark-operator.enabled"
    assert "dependencies" not in CORE, "the core chart must stay installable on its own"


def test_the_offline_umbrella_holds_the_real_spark_operator_chart(stack: Path) -> None:
    listed = helm.helm("dependency", "list", stack).stdout
    rows = {row[0]: row for row in (line.split() for line in listed.splitlines()[1:]) if row}
    assert set(rows) == {"carstream", "spark-operator"}
    assert all(row[-1] == "ok" for row in rows.values())
    archive = stack / "charts" / f"{SPARK_OPERATOR_CHART}.tgz"
    assert archive.read_bytes() == toolchain.spark_operator_chart().read_bytes()


def test_the_assembler_says_what_is_missing(tmp_path: Path) -> None:
    script = toolchain.REPO_ROOT / "scripts" / "stack_chart.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "the strimzi-kafka-operator chart is not at hand" in result.stderr
    assert "--without strimzi-kafka-operator" in result.stderr
    unknown = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--without", "kafka"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "--without kafka: not a dependency" in unknown.stderr
    usage = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: stack_chart.py" in usage.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_stack_values_give_the_core_chart_its_own_values(profile: str) -> None:
    stack = yaml.safe_load((STACK_CHART / f"values-{profile}.yaml").read_text())
    core = yaml.safe_load((CHART / f"values-{profile}.yaml").read_text())
    assert stack["carstream"] == core


@pytest.mark.parametrize("values_file", ["values.yaml", *(f"values-{p}.yaml" for p in PROFILES)])
def test_spark_operator_runs_our_namespace_and_leaves_the_spark_account_to_us(
    values_file: str,
) -> None:
    values = yaml.safe_load((STACK_CHART / values_file).read_text())
    spark = values["spark-operator"]["spark"]
    assert "carstream" in spark["jobNamespaces"]
    assert spark["serviceAccount"]["create"] is False
    assert spark["rbac"]["create"] is False
    assert values["spark-operator"]["enabled"] is True


@pytest.mark.parametrize("profile", PROFILES)
def test_the_umbrella_renders_the_core_chart_with_its_values_and_spark_operator(
    stack: Path, profile: str
) -> None:
    objects = helm.render_stack(stack, STACK_VALUES_FILES[profile])
    core = helm.render([CHART / f"values-{profile}.yaml"])
    operator = spark_operator_objects(objects)
    own = umbrella_objects(objects)
    assert sorted(obj["kind"] for obj in own) == ["NetworkPolicy", "Role", "RoleBinding"]
    (policy,) = by_kind(own, "NetworkPolicy")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "spark-operator"
    )
    rest = [obj for obj in objects if obj not in operator and obj not in own]
    assert sorted(map(_without_passwords, rest), key=repr) == sorted(
        map(_without_passwords, core), key=repr
    )
    kinds = {obj["kind"] for obj in operator}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "Role", "Service"} <= kinds
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} <= kinds
    controller = next(
        d for d in by_kind(operator, "Deployment") if d["metadata"]["name"].endswith("controller")
    )
    (container,) = controller["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["controller", "start"]
    assert "--namespaces=carstream" in container["args"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    # The core chart keeps the Spark ServiceAccount and Role; spark-operator makes none.
    assert not [a for a in by_kind(operator, "ServiceAccount") if a["metadata"]["name"] == "spark"]


def node_port_values(prefix: str) -> list[str]:
    """--set values giving an external listener two node ports no other test took."""
    bootstrap = random.randrange(30100, 32000, 2)
    return [
        f"{prefix}.bootstrapNodePort={bootstrap}",
        f"{prefix}.brokerNodePorts={{{bootstrap + 1}}}",
    ]


def _without_passwords(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its Secret values left out: the standalone Kafka's passwords are random
    in every render."""
    if obj["kind"] != "Secret":
        return obj
    return {**obj, "data": sorted(obj.get("data") or {})}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_of_the_umbrella_matches_its_schema(stack: Path, profile: str) -> None:
    objects = helm.render_stack(stack, STACK_VALUES_FILES[profile])
    assert list(schemas.all_errors(objects)) == []
    manifests = yaml.safe_dump_all(spark_operator_objects(objects))
    result = kubeconform(manifests, "-summary")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0" in result.stdout


def test_the_local_values_run_the_controller_image_built_here_with_the_webhook(
    stack: Path,
) -> None:
    operator = spark_operator_objects(helm.render_stack(stack, STACK_VALUES_FILES["local"]))
    images = set()
    for deployment in by_kind(operator, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        images.add((container["image"], container["imagePullPolicy"]))
    assert images == {("docker.io/library/carstream-spark-operator:2.5.2", "Never")}
    webhook = one(operator, "MutatingWebhookConfiguration")
    selector = webhook["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]
    assert selector["values"] == ["carstream"]


# kube-score checks accepted for spark-operator's pods, with the reason.
SPARK_OPERATOR_ACCEPTED = {
    # They run as the image's user 185, the Spark user with a passwd entry: spark-submit
    # (Hadoop's UserGroupInformation) fails for a uid without one.
    "container-security-context-user-group-id",
    # One webhook replica: carstream's applications do not need it and its failurePolicy is
    # Ignore, so a restarting webhook stops nothing.
    "deployment-replicas",
}


@pytest.mark.parametrize("profile", PROFILES)
def test_kube_score_finds_nothing_else_in_spark_operators_objects(
    stack: Path, profile: str, tmp_path: Path
) -> None:
    objects = helm.render_stack(stack, STACK_VALUES_FILES[profile])
    mine = [*spark_operator_objects(objects), *umbrella_objects(objects)]
    found = findings(kube_score(yaml.safe_dump_all(in_release_namespace(mine)), tmp_path))
    assert [f for f in found if f.split(": ")[1] not in SPARK_OPERATOR_ACCEPTED] == []


def test_an_install_into_another_namespace_must_name_it_for_spark_operator(stack: Path) -> None:
    result = helm.helm(
        "template",
        "carstream",
        stack,
        "--namespace",
        "elsewhere",
        *helm.value_args(STACK_VALUES_FILES["local"]),
        check=False,
    )
    assert result.returncode != 0
    assert "without the release namespace elsewhere" in result.stderr
    assert "--set 'spark-operator.spark.jobNamespaces={elsewhere}'" in result.stderr
    allowed = helm.render_stack(
        stack,
        STACK_VALUES_FILES["local"],
        ["spark-operator.spark.jobNamespaces={elsewhere}"],
        namespace="elsewhere",
    )
    assert one(allowed, "Pipeline")["metadata"]["namespace"] == "elsewhere"


def test_helm_install_of_the_umbrella_into_the_api_server(
    stack: Path, kube_control_plane: ControlPlane, kube_namespace: str
) -> None:
    """Everything the umbrella creates, spark-operator's cluster-wide objects included, is
    accepted by the real API server, in a namespace that enforces Pod Security restricted."""
    plane, namespace = kube_control_plane, kube_namespace
    restricted_namespace(plane, namespace)
    release = f"stack-{namespace.rsplit('-', 1)[-1]}"
    install = helm.helm(
        "install",
        release,
        stack,
        "--namespace",
        namespace,
        *helm.value_args(
            STACK_VALUES_FILES["local"],
            [
                "strimzi-kafka-operator.enabled=false",
                f"spark-operator.spark.jobNamespaces={{{namespace}}}",
                # Node ports are cluster-wide: others of this API server may hold the default.
                *node_port_values("carstream.kafka.externalListener"),
            ],
        ),
        env=plane.env(),
        timeout=180,
        check=False,
    )
    try:
        assert install.returncode == 0, install.stderr
        assert "STATUS: deployed" in install.stdout
        assert "would violate PodSecurity" not in install.stderr, install.stderr
        assert "  - spark-operator (job namespaces: " + namespace + ")" in install.stdout
        deployments = plane.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
        assert f"deployment.apps/{release}-spark-operator-controller" in deployments.split()
        assert f"deployment.apps/{release}-spark-operator-webhook" in deployments.split()
    finally:
        # Its ClusterRoles and webhook configurations outlive the namespace otherwise. No
        # hooks: this API server runs no pods, so the pre-delete Job would never finish.
        helm.helm(
            "uninstall", release, "--namespace", namespace, "--no-hooks",
            env=plane.env(), check=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("release", "set_values"),
    [
        ("carstream", ()),
        ("spark-operator", ()),  # spark-operator's chart drops the repeated name
        ("carstream", ("spark-operator.fullnameOverride=sparkop",)),
        ("carstream", ("spark-operator.controller.serviceAccount.name=submitter",)),
    ],
)
def test_spark_submit_in_the_controller_may_create_the_drivers_network_policies(
    stack: Path, release: str, set_values: tuple[str, ...]
) -> None:
    """Spark 4 applies a NetworkPolicy with every driver; spark-submit runs as spark-operator's
    controller, which spark-operator's chart does not allow that: the umbrella does."""
    without = [f"{name}.enabled=false" for name in helm.OFFLINE_STACK_WITHOUT]
    text = helm.helm(
        "template", release, stack, "--namespace", helm.NAMESPACE,
        *helm.value_args([STACK_CHART / "values-local.yaml"], [*without, *set_values]),
    ).stdout  # fmt: skip
    objects = helm.documents(text)
    controller = next(
        d
        for d in by_kind(spark_operator_objects(objects), "Deployment")
        if d["metadata"]["name"].endswith("controller")
    )
    account = controller["spec"]["template"]["spec"]["serviceAccountName"]
    (role,) = [o for o in by_kind(objects, "Role") if "networkpolicies" in json.dumps(o)]
    (binding,) = [
        b
        for b in by_kind(objects, "RoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": helm.NAMESPACE}
    ]
    (rule,) = role["rules"]
    assert rule["resources"] == ["networkpolicies"]
    assert {"create", "patch", "get", "delete"} <= set(rule["verbs"])
