"""k8s/: the kustomize base and overlays deploy exactly what the chart deploys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import yaml

from carstream import toolchain
from tests.chart import helm
from tests.chart.helm import CHART, K8S

Key = tuple[str, str, str]


def by_key(objects: Iterable[Mapping[str, Any]]) -> dict[Key, Mapping[str, Any]]:
    return {
        (obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", "")): obj
        for obj in objects
    }


def chart_as_kustomize_renders_it(values_files: tuple = ()) -> dict[Key, Mapping[str, Any]]:
    text = helm.template(values_files, extra=["--skip-tests", "--no-hooks"])
    objects = []
    for obj in helm.documents(text):
        for labels in (
            obj["metadata"].get("labels", {}),
            obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
            if isinstance(obj.get("spec", {}).get("template"), dict)
            else {},
        ):
            labels.pop("helm.sh/chart", None)
            if labels.get("app.kubernetes.io/managed-by") == "Helm":
                labels["app.kubernetes.io/managed-by"] = "kustomize"
        objects.append(obj)
    return by_key(objects)


def test_generated_files_are_up_to_date() -> None:
    script = toolchain.REPO_ROOT / "scripts" / "render_k8s.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("layer", "values_files"),
    [
        ("base", ()),
        ("overlays/kind", (CHART / "values-kind.yaml",)),
        ("overlays/eks", (CHART / "values-eks.yaml",)),
    ],
)
def test_kustomize_renders_the_same_objects_as_the_chart(layer: str, values_files: tuple) -> None:
    rendered = by_key(helm.documents(helm.kubectl("kustomize", K8S / layer).stdout))
    crds = {k: obj for k, obj in rendered.items() if k[0] == "CustomResourceDefinition"}
    namespaces = {k for k in rendered if k[0] == "Namespace"}
    workload = {k: obj for k, obj in rendered.items() if k not in crds and k not in namespaces}
    assert namespaces == {("Namespace", "carstream", "")}
    assert workload == chart_as_kustomize_renders_it(values_files)
    chart_crds = by_key(
        doc
        for path in sorted((CHART / "crds").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )
    assert crds == chart_crds, "the CRDs must come from the chart's crds/ unchanged"


def test_the_chart_hides_the_crd_kustomization_from_helm() -> None:
    assert "crds/kustomization.yaml" in (CHART / ".helmignore").read_text().splitlines()
    packaged = helm.helm("show", "crds", CHART).stdout
    assert "kind: Kustomization" not in packaged
    assert packaged.count("kind: CustomResourceDefinition") == 2
