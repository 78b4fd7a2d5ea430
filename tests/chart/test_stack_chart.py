"""The umbrella chart carstream-stack: carstream + Strimzi + spark-operator.

The two operator charts cannot be downloaded here, so helm cannot lint or render the umbrella
(it refuses a chart whose dependencies are missing from charts/). What is checked: helm reads
its Chart.yaml and dependency list, the dependencies are the agreed charts and versions behind
conditions, and its values files give the core chart exactly the core chart's own kind and EKS
values, and the operators the settings carstream relies on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.chart import helm
from tests.chart.helm import CHART, STACK_CHART
from tests.fixtures.kube import ControlPlane

STACK = yaml.safe_load((STACK_CHART / "Chart.yaml").read_text())
CORE = yaml.safe_load((CHART / "Chart.yaml").read_text())


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


@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_stack_values_give_the_core_chart_its_own_values(profile: str) -> None:
    stack = yaml.safe_load((STACK_CHART / f"values-{profile}.yaml").read_text())
    core = yaml.safe_load((CHART / f"values-{profile}.yaml").read_text())
    assert stack["carstream"] == core


@pytest.mark.parametrize("values_file", ["values.yaml", "values-kind.yaml", "values-eks.yaml"])
def test_spark_operator_runs_our_namespace_and_leaves_the_spark_account_to_us(
    values_file: str,
) -> None:
    values = yaml.safe_load((STACK_CHART / values_file).read_text())
    spark = values["spark-operator"]["spark"]
    assert "carstream" in spark["jobNamespaces"]
    assert spark["serviceAccount"]["create"] is False
    assert spark["rbac"]["create"] is False
    assert values["strimzi-kafka-operator"]["enabled"] is True
    assert values["spark-operator"]["enabled"] is True


@pytest.fixture
def stack_with_core_only(tmp_path: Path) -> Path:
    """A copy of the umbrella with its one local dependency only: what can be built offline."""
    chart = tmp_path / "carstream-stack"
    shutil.copytree(STACK_CHART, chart)
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    metadata["dependencies"] = [
        {**dependency, "repository": f"file://{CHART}"}
        for dependency in metadata["dependencies"]
        if dependency["name"] == "carstream"
    ]
    (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata))
    helm.helm("dependency", "build", chart)
    return chart


@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_the_umbrella_renders_the_core_chart_with_its_values(
    stack_with_core_only: Path, profile: str
) -> None:
    operators_off = ["strimzi-kafka-operator.enabled=false", "spark-operator.enabled=false"]
    stack = helm.documents(
        helm.helm(
            "template",
            "carstream",
            stack_with_core_only,
            "--namespace",
            helm.NAMESPACE,
            *helm.value_args([STACK_CHART / f"values-{profile}.yaml"], operators_off),
        ).stdout
    )
    core = helm.render([CHART / f"values-{profile}.yaml"])
    assert sorted(stack, key=repr) == sorted(core, key=repr)


def test_the_umbrella_notes_list_what_was_installed(
    stack_with_core_only: Path, kube_control_plane: ControlPlane, kube_namespace: str
) -> None:
    notes = helm.helm(
        "install",
        "carstream",
        stack_with_core_only,
        "--dry-run=client",
        "--namespace",
        kube_namespace,
        *helm.value_args([STACK_CHART / "values-kind.yaml"]),
        env=kube_control_plane.env(),
    ).stdout
    assert "  - the Strimzi cluster operator" in notes
    assert "  - spark-operator (job namespaces: carstream)" in notes
    assert f"kubectl -n {kube_namespace} get pipelines,pipelinestages,sparkapplications" in notes
