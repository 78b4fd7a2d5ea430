"""`helm install` and `kubectl apply -k --dry-run=server` into a real kube-apiserver.

The API server validates every object against the installed CRDs (Strimzi, spark-operator and
carstream's, CEL rules included) and checks the pods against Pod Security "restricted". It runs
no controllers, so nothing here starts a pod: that part is for a real cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chart import helm
from tests.chart.helm import CHART, K8S, VALUES_FILES
from tests.fixtures.kube import ControlPlane

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def restricted_namespace(plane: ControlPlane, namespace: str) -> None:
    labels = [f"{key}={value}" for key, value in RESTRICTED.items()]
    plane.kubectl("label", "namespace", namespace, *labels)


def helm_install(
    plane: ControlPlane,
    namespace: str,
    values_files: tuple[Path, ...],
    set_values: tuple[str, ...] = (),
    command: str = "install",
) -> tuple[str, str]:
    result = helm.helm(
        command,
        "carstream",
        CHART,
        "--namespace",
        namespace,
        *helm.value_args(values_files, set_values),
        env=plane.env(),
        timeout=180,
    )
    return result.stdout, result.stderr


@pytest.mark.parametrize("profile", ["kind", "eks"])
def test_helm_install_into_the_api_server(
    profile: str, kube_control_plane: ControlPlane, kube_namespace: str
) -> None:
    plane, namespace = kube_control_plane, kube_namespace
    restricted_namespace(plane, namespace)
    stdout, stderr = helm_install(plane, namespace, VALUES_FILES[profile])
    assert "STATUS: deployed" in stdout
    assert "would violate PodSecurity" not in stderr, stderr
    assert "Pod Security: namespace" not in stdout, "it enforces restricted already"
    assert f"kubectl -n {namespace} get pipelines,pipelinestages,sparkapplications" in stdout
    assert f"helm test carstream -n {namespace}" in stdout

    listed = plane.kubectl(
        "get",
        "kafkas,kafkanodepools,kafkatopics,kafkausers,pipelines,deployments,roles,rolebindings",
        "-n",
        namespace,
        "-o",
        "name",
    ).stdout.split()
    assert "kafka.kafka.strimzi.io/carstream" in listed
    assert "pipeline.carstream.io/carstream" in listed
    assert "deployment.apps/carstream-operator" in listed
    assert sum(name.startswith("kafkatopic.") for name in listed) == 5
    # one per Kafka stage, the viewer and the operator (backlogs of sleeping stages)
    assert sum(name.startswith("kafkauser.") for name in listed) == 6
    status = helm.helm("status", "carstream", "-n", namespace, env=plane.env()).stdout
    assert "STATUS: deployed" in status


@pytest.mark.parametrize("profile", ["default", "kind-standalone"])
def test_helm_test_pod_is_admitted_under_restricted_pod_security(
    profile: str, kube_control_plane: ControlPlane, kube_namespace: str
) -> None:
    plane, namespace = kube_control_plane, kube_namespace
    restricted_namespace(plane, namespace)
    hook = helm.template(
        VALUES_FILES[profile],
        namespace=namespace,
        extra=["--show-only", "templates/tests/check-topics.yaml"],
    )
    result = plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=hook)
    assert "pod/carstream-check-topics created (server dry run)" in result.stdout
    assert "Warning" not in result.stderr, result.stderr

    privileged = hook.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    refused = plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=privileged, check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr


def secret_passwords(plane: ControlPlane, namespace: str) -> dict[str, str]:
    listed = plane.kubectl(
        "get", "secrets", "-n", namespace, "-l", "app.kubernetes.io/component=kafka", "-o", "json"
    ).stdout
    return {
        item["metadata"]["name"]: item["data"]["password"] for item in json.loads(listed)["items"]
    }


def test_standalone_kafka_installs_and_an_upgrade_keeps_the_passwords(
    kube_control_plane: ControlPlane, kube_namespace: str
) -> None:
    """kafka.mode standalone into the real API server: no Strimzi object, a restricted broker
    StatefulSet and setup Job, and Secrets whose passwords survive `helm upgrade`."""
    plane, namespace = kube_control_plane, kube_namespace
    restricted_namespace(plane, namespace)
    values = VALUES_FILES["kind-standalone"]
    stdout, stderr = helm_install(plane, namespace, values)
    assert "STATUS: deployed" in stdout
    assert "would violate PodSecurity" not in stderr, stderr
    assert (
        f"kubectl -n {namespace} wait job/carstream-kafka-setup-1 --for=condition=Complete"
        in stdout
    )
    listed = plane.kubectl(
        "get",
        "statefulsets,services,jobs,configmaps,networkpolicies,kafkas,kafkausers",
        "-n",
        namespace,
        "-o",
        "name",
    ).stdout.split()
    assert "statefulset.apps/carstream-kafka" in listed
    assert "service/carstream-kafka-bootstrap" in listed
    assert "service/carstream-kafka-external" in listed
    assert "job.batch/carstream-kafka-setup-1" in listed
    assert "configmap/carstream-kafka-setup" in listed
    assert "networkpolicy.networking.k8s.io/carstream-kafka" in listed
    assert not [name for name in listed if "strimzi.io" in name]
    before = secret_passwords(plane, namespace)
    assert set(before) == {
        "carstream-generate",
        "carstream-enrich",
        "carstream-detect",
        "carstream-count",
        "carstream-viewer",
        "carstream-operator",
        "carstream-kafka-admin",
    }

    upgraded, _ = helm_install(plane, namespace, values, command="upgrade")
    assert "STATUS: deployed" in upgraded
    assert "REVISION: 2" in upgraded
    assert secret_passwords(plane, namespace) == before, "an upgrade keeps every password"
    jobs = plane.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.split()
    assert jobs == ["job.batch/carstream-kafka-setup-2"], "each revision runs the setup again"


def ensure_namespace(plane: ControlPlane, name: str) -> None:
    if plane.kubectl("get", "namespace", name, check=False).returncode != 0:
        plane.kubectl("create", "namespace", name)


@pytest.mark.parametrize("overlay", ["kind", "eks"])
def test_kubectl_apply_k_dry_run_server(overlay: str, kube_control_plane: ControlPlane) -> None:
    plane = kube_control_plane
    # The overlays deploy into the namespace `carstream`; a server-side dry run of objects in a
    # namespace needs the namespace to exist (its own creation is only simulated).
    ensure_namespace(plane, "carstream")
    result = plane.kubectl("apply", "-k", str(K8S / "overlays" / overlay), "--dry-run=server")
    lines = result.stdout.splitlines()
    assert "pipeline.carstream.io/carstream created (server dry run)" in lines
    assert "kafka.kafka.strimzi.io/carstream created (server dry run)" in lines
    assert "deployment.apps/carstream-operator created (server dry run)" in lines
    assert any(
        line.startswith("customresourcedefinition.apiextensions.k8s.io/pipelines") for line in lines
    )
    assert "would violate PodSecurity" not in result.stderr, result.stderr


def test_the_api_server_rejects_a_pipeline_that_breaks_a_crd_rule(
    kube_control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    """The chart's values schema does not see CEL rules; the API server does, at install."""
    plane, namespace = kube_control_plane, kube_namespace
    values = tmp_path / "values.yaml"
    values.write_text(
        "pipeline:\n"
        "  stages:\n"
        "    - name: dims\n"
        "    - name: count\n"
        "      dependsOn: [nonexistent]\n"
    )
    broken = helm.template(
        (values,), namespace=namespace, extra=["--show-only", "templates/pipeline.yaml"]
    )
    result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=broken, check=False)
    assert result.returncode != 0
    assert "dependsOn must name stages of this pipeline" in result.stderr


def test_the_notes_say_how_to_enforce_restricted_where_it_is_not(
    kube_control_plane: ControlPlane, kube_namespace: str
) -> None:
    """A chart cannot label its own namespace (Helm stores the release there first); its notes
    read the namespace's Pod Security level and give the command that enforces restricted."""
    plane, namespace = kube_control_plane, kube_namespace
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
    stdout, stderr = helm_install(plane, namespace, VALUES_FILES["kind"])
    assert f'Pod Security: namespace {namespace} enforces "baseline"' in stdout
    command = f"kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=restricted"
    assert command in stdout
    assert "would violate PodSecurity" not in stderr
