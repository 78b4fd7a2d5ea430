"""Security checks of the rendered manifests with kube-score, and no secrets in any values file.

Deliberately ignored kube-score check, with the reason:
- container-image-pull-policy (wants `Always`): on kind the image is loaded into the nodes
  (`kind load docker-image`) and must be used as it is (`Never`); elsewhere the chart pins a
  versioned tag, so `IfNotPresent` pulls the same image. The pull policy is a value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.chart import helm
from tests.chart.helm import CHART, K8S, STACK_CHART, VALUES_FILES

IGNORED_CHECKS = ("container-image-pull-policy",)
OPTIONAL_CHECKS = ("container-seccomp-profile",)
# kube-score grades: 1 critical, 5 warning, 7 almost ok, 10 ok.
PASSING_GRADE = 7


def kube_score(manifests: str, tmp_path: Path) -> list[dict]:
    path = tmp_path / "manifests.yaml"
    path.write_text(manifests)
    args = ["score", "--kubernetes-version", "v1.37", "--output-format", "json"]
    for check in OPTIONAL_CHECKS:
        args += ["--enable-optional-test", check]
    for check in IGNORED_CHECKS:
        args += ["--ignore-test", check]
    result = helm.run("kube-score", *args, path, check=False)
    assert result.returncode in (0, 1), result.stderr
    scored: list[dict] = json.loads(result.stdout)
    return scored


def findings(scored: list[dict]) -> list[str]:
    return [
        f"{obj['object_name']}: {check['check']['id']}: "
        + "; ".join(c.get("summary", "") for c in check.get("comments") or [])
        for obj in scored
        for check in obj["checks"]
        if not check["skipped"] and check["grade"] < PASSING_GRADE
    ]


@pytest.mark.parametrize("profile", sorted(VALUES_FILES))
def test_kube_score_finds_nothing_in_the_chart(profile: str, tmp_path: Path) -> None:
    scored = kube_score(helm.template(VALUES_FILES[profile]), tmp_path)
    passed = {
        (obj["type_meta"]["kind"], check["check"]["id"])
        for obj in scored
        for check in obj["checks"]
        if not check["skipped"] and check["grade"] >= PASSING_GRADE
    }
    kinds = (
        ("Deployment", "Pod", "StatefulSet", "Job")
        if "standalone" in profile
        else ("Deployment", "Pod")
    )
    for kind in kinds:
        for check in (
            "container-resources",
            "container-security-context-privileged",
            "container-security-context-readonlyrootfilesystem",
            "container-security-context-user-group-id",
            "container-seccomp-profile",
            "pod-networkpolicy",
        ):
            assert (kind, check) in passed, f"{check} did not run on the {kind}"
    assert findings(scored) == []


@pytest.mark.parametrize("overlay", ["kind", "eks"])
def test_kube_score_finds_nothing_in_the_kustomize_overlays(overlay: str, tmp_path: Path) -> None:
    manifests = helm.kubectl("kustomize", K8S / "overlays" / overlay).stdout
    assert findings(kube_score(manifests, tmp_path)) == []


SECRET_KEY = re.compile(r"(password|passwd|secret.?key|access.?key|token|credential)", re.I)
SECRET_VALUE = re.compile(r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----)")


def leaves(node: object, path: str = "") -> list[tuple[str, object]]:
    if isinstance(node, dict):
        return [pair for key, value in node.items() for pair in leaves(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [
            pair for index, value in enumerate(node) for pair in leaves(value, f"{path}[{index}]")
        ]
    return [(path, node)]


@pytest.mark.parametrize(
    "values_file",
    [
        CHART / "values.yaml",
        CHART / "values-kind.yaml",
        CHART / "values-eks.yaml",
        CHART / "values-standalone.yaml",
        STACK_CHART / "values.yaml",
        STACK_CHART / "values-kind.yaml",
        STACK_CHART / "values-eks.yaml",
    ],
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_no_secret_in_values(values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text())
    for path, value in leaves(values):
        if isinstance(value, str) and SECRET_VALUE.search(value):
            pytest.fail(f"{values_file.name}{path} holds what looks like a key")
        name = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(name) and value not in ("", None):
            # Only references to Secrets are allowed: their names, never their contents.
            assert name.endswith(("Secret", "credentialsSecret")), f"{values_file.name}{path}"
