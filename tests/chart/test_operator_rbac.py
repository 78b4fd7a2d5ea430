"""The operator's RBAC is enough and no more: the real operator, authenticated with a token of
its ServiceAccount (RBAC on in the API server), reconciles the Pipeline that `helm install`
created, while requests outside its Role are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi

from tests.chart import helm
from tests.chart.helm import CHART, VALUES_FILES
from tests.fixtures.kube import ControlPlane
from tests.operator.driver_pods import create_failed_driver_pod, mark_failed

OPERATOR_ACCOUNT = "carstream-operator"
STAGES = ["dims", "generate", "enrich", "detect", "count"]


def service_account_kubeconfig(plane: ControlPlane, namespace: str, path: Path) -> Path:
    token = plane.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)},
            }
        ],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": "local", "user": OPERATOR_ACCOUNT, "namespace": namespace},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path


def as_operator(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return helm.kubectl(f"--kubeconfig={kubeconfig}", *args, check=False)


def wait_for(condition: Callable[[], Any], what: str, log: Path, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; operator log:\n{log.read_text()[-4000:]}")


@pytest.fixture
def installed(kube_control_plane: ControlPlane, kube_namespace: str) -> str:
    helm.helm(
        "install",
        "carstream",
        CHART,
        "--namespace",
        kube_namespace,
        *helm.value_args(VALUES_FILES["kind"]),
        env=kube_control_plane.env(),
        timeout=180,
    )
    return kube_namespace


@pytest.fixture
def operator_kubeconfig(kube_control_plane: ControlPlane, installed: str, tmp_path: Path) -> Path:
    return service_account_kubeconfig(
        kube_control_plane, installed, tmp_path / "operator.kubeconfig"
    )


def deployment_environment(namespace: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of the operator container of the rendered Deployment."""
    deployment = helm.one(helm.render(VALUES_FILES["kind"], namespace=namespace), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    environment = {}
    for item in container["env"]:
        if "value" in item:
            environment[item["name"]] = item["value"]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, item
            environment[item["name"]] = "carstream-operator-0"
    return list(container["command"]), environment


@pytest.fixture
def operator_log(installed: str, operator_kubeconfig: Path, tmp_path: Path) -> Iterator[Path]:
    """`carstream-operator` as the Deployment runs it, with its ServiceAccount's identity."""
    log = tmp_path / "operator.log"
    command, deployment_env = deployment_environment(installed)
    assert deployment_env["CARSTREAM_OPERATOR_NAMESPACES"] == installed
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBERNETES_", "CARSTREAM_OPERATOR_"))
    }
    environment |= deployment_env
    environment |= {
        "KUBECONFIG": str(operator_kubeconfig),
        # Free ports are not guaranteed on a shared machine: no HTTP endpoints in this test.
        "CARSTREAM_OPERATOR_METRICS_PORT": "0",
        "CARSTREAM_OPERATOR_LIVENESS_PORT": "0",
        "CARSTREAM_OPERATOR_RESYNC_SECONDS": "2",
    }
    executable = Path(sys.executable).parent / command[0]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(executable), *command[1:]],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield log
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def get_json(plane: ControlPlane, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(plane.kubectl("get", *args, "-o", "json").stdout)
    return result


def test_operator_reconciles_the_pipeline_with_its_service_account_only(
    kube_control_plane: ControlPlane, installed: str, operator_log: Path
) -> None:
    plane, namespace = kube_control_plane, installed

    def stages() -> list[str]:
        items = get_json(plane, "pipelinestages", "-n", namespace)["items"]
        return sorted(item["spec"]["stage"] for item in items)

    wait_for(lambda: stages() == sorted(STAGES), "five PipelineStages", operator_log)

    def applications() -> dict[str, dict[str, Any]]:
        items = get_json(plane, "sparkapplications", "-n", namespace)["items"]
        return {item["metadata"]["labels"]["carstream.io/stage"]: item for item in items}

    dims = wait_for(lambda: applications().get("dims"), "the dims SparkApplication", operator_log)
    assert set(applications()) == {"dims"}, "only dims has no dependency"
    assert dims["spec"]["arguments"][:2] == ["stage", "dims"]
    assert dims["spec"]["driver"]["serviceAccount"] == "carstream-spark"
    assert dims["metadata"]["ownerReferences"][0]["kind"] == "PipelineStage"

    # Play spark-operator: dims ran to completion, so generate and enrich may start.
    plane.kubectl(
        "patch",
        "sparkapplication",
        dims["metadata"]["name"],
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"applicationState": {"state": "COMPLETED"}, "driverInfo": {}}}),
    )
    wait_for(
        lambda: {"generate", "enrich"} <= set(applications()),
        "the generate and enrich SparkApplications",
        operator_log,
    )
    for stage in ("generate", "enrich"):
        driver = applications()[stage]["spec"]["driver"]
        (container,) = driver["template"]["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["CARSTREAM_KAFKA_USERNAME"]["value"] == f"carstream-{stage}"
        assert env["CARSTREAM_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": f"carstream-{stage}",
            "key": "password",
        }

    # Play spark-operator and the kubelet: enrich's driver failed and said why; the operator
    # reads the driver pod with its own token and shows the reason.
    enrich = applications()["enrich"]["metadata"]["name"]
    core, custom = CoreV1Api(plane.api_client()), CustomObjectsApi(plane.api_client())
    pod = create_failed_driver_pod(core, namespace, enrich, "KafkaAuthenticationFailed: refused")
    mark_failed(custom, namespace, enrich, pod)

    def enrich_reason() -> str:
        stage = get_json(plane, "pipelinestage", "carstream-enrich", "-n", namespace)
        reason: str = (stage.get("status") or {}).get("reason", "")
        return reason if reason == "KafkaAuthenticationFailed" else ""

    wait_for(enrich_reason, "the enrich stage's reason from its driver pod", operator_log)

    log = operator_log.read_text()
    # Not one call refused: with named namespaces kopf makes no cluster-wide call either.
    refusals = [line for line in log.splitlines() if "forbidden" in line.lower() or " 403" in line]
    assert refusals == [], "\n".join(refusals)


OPERATOR_RIGHTS = [
    (("create", "pipelinestages"), "yes"),
    (("patch", "pipelinestages", "--subresource=status"), "yes"),
    (("patch", "pipelines", "--subresource=status"), "yes"),
    (("create", "sparkapplications"), "yes"),
    (("delete", "sparkapplications"), "yes"),
    (("create", "events"), "yes"),
    (("watch", "pipelines"), "yes"),
    (("delete", "pipelines"), "no"),
    (("create", "pipelines"), "no"),
    (("update", "sparkapplications"), "no"),
    (("get", "secrets"), "no"),
    (("get", "pods"), "yes"),
    (("list", "pods"), "no"),
    (("watch", "pods"), "no"),
    (("get", "pods", "--subresource=log"), "no"),
    (("get", "pods", "--namespace=default"), "no"),
    (("create", "pods"), "no"),
    (("create", "deployments"), "no"),
    (("create", "roles"), "no"),
    (("list", "sparkapplications", "--all-namespaces"), "no"),
    (("list", "namespaces"), "no"),
    (("list", "customresourcedefinitions"), "no"),
]


def test_operator_account_may_do_what_it_uses_and_nothing_else(operator_kubeconfig: Path) -> None:
    answers = {
        request: as_operator(operator_kubeconfig, "auth", "can-i", *request).stdout.strip()
        for request, _ in OPERATOR_RIGHTS
    }
    assert answers == dict(OPERATOR_RIGHTS)


def test_requests_outside_the_role_are_refused(operator_kubeconfig: Path, installed: str) -> None:
    secrets = as_operator(operator_kubeconfig, "get", "secrets", "--all-namespaces")
    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr
    assert 'cannot list resource "secrets"' in secrets.stderr
    deployment = as_operator(
        operator_kubeconfig, "create", "deployment", "intruder", "--image=busybox", "-n", installed
    )
    assert deployment.returncode != 0
    assert 'cannot create resource "deployments"' in deployment.stderr
    other = as_operator(operator_kubeconfig, "get", "pipelines", "-n", "default")
    assert other.returncode != 0
    assert 'cannot list resource "pipelines"' in other.stderr
