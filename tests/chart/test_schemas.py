"""Every object the chart and the kustomize overlays render, against its real schema."""

from __future__ import annotations

import copy

import pytest

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
