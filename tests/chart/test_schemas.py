"""Every object the chart and the kustomize overlays render, against its real schema."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from carstream import toolchain
from tests.chart import helm, schemas
from tests.chart.helm import K8S, VALUES_FILES, one, render


def test_schemas_of_every_custom_resource_kind_are_known() -> None:
    known = set(schemas.custom_resource_schemas())
    assert {
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("kafka.strimzi.io/v1", "KafkaUser"),
        ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),
        ("carstream.io/v1alpha1", "Pipeline"),
        ("carstream.io/v1alpha1", "PipelineStage"),
    } <= known


@pytest.mark.parametrize("profile", sorted(VALUES_FILES))
def test_every_rendered_object_matches_its_schema(profile: str) -> None:
    objects = render(VALUES_FILES[profile])
    assert len(objects) > 20
    assert list(schemas.all_errors(objects)) == []


@pytest.mark.parametrize("overlay", ["kind", "eks"])
def test_every_object_of_the_kustomize_overlays_matches_its_schema(overlay: str) -> None:
    objects = helm.documents(helm.kubectl("kustomize", K8S / "overlays" / overlay).stdout)
    assert {obj["kind"] for obj in objects} >= {"CustomResourceDefinition", "Pipeline", "Kafka"}
    assert list(schemas.all_errors(objects)) == []


def test_a_wrong_field_is_caught_in_custom_and_built_in_objects() -> None:
    objects = render()
    topic = copy.deepcopy(one([o for o in objects if o["kind"] == "KafkaTopic"][:1], "KafkaTopic"))
    topic["spec"]["partitionCount"] = 3
    assert schemas.errors(topic) == [
        f"KafkaTopic/{topic['metadata']['name']}: spec: Additional properties are not allowed "
        "('partitionCount' was unexpected)"
    ]
    pipeline = copy.deepcopy(one(objects, "Pipeline"))
    pipeline["spec"]["stages"][0]["trigger"] = {"type": "sometimes"}
    assert any("'sometimes' is not one of" in error for error in schemas.errors(pipeline))
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = []
    assert schemas.errors(deployment), "a list as a CPU limit must not validate"
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    assert any("httpGett" in error for error in schemas.errors(deployment))


# The kinds whose schemas come from CRDs: checked above against the upstream CRDs and ours.
CUSTOM_KINDS = "Kafka,KafkaNodePool,KafkaTopic,KafkaUser,Pipeline,PipelineStage,SparkApplication"


def kubeconform(manifests: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """kubeconform, strict and offline, on Kubernetes 1.37; a kind without a schema fails."""
    location = (
        f"{toolchain.kubeconform_schemas_dir()}/{{{{.NormalizedKubernetesVersion}}}}-local"
        "{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json"
    )
    return helm.run(
        "kubeconform",
        "-strict",
        "-kubernetes-version",
        "1.37.0",
        "-schema-location",
        location,
        *flags,
        input_text=manifests,
        check=False,
    )


@pytest.mark.parametrize("profile", sorted(VALUES_FILES))
def test_kubeconform_accepts_every_built_in_object_of_the_chart(profile: str) -> None:
    result = kubeconform(helm.template(VALUES_FILES[profile]), "-summary", "-skip", CUSTOM_KINDS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0" in result.stdout
    assert "Valid: 0," not in result.stdout


@pytest.mark.parametrize("overlay", ["kind", "eks"])
def test_kubeconform_accepts_every_built_in_object_of_the_overlays(overlay: str) -> None:
    manifests = helm.kubectl("kustomize", K8S / "overlays" / overlay).stdout
    result = kubeconform(manifests, "-summary", "-skip", CUSTOM_KINDS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0" in result.stdout


def test_kubeconform_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(one(render(), "Deployment"))
    deployment["spec"]["replicass"] = 1
    result = kubeconform(yaml.safe_dump(deployment))
    assert result.returncode != 0
    assert "replicass" in result.stdout + result.stderr
