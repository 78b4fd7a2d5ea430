"""carstream's SparkApplications through the real spark-operator controller, without its webhook.

The operator's builders make a stage's SparkApplication from the chart's kind Pipeline; the
controller (spark-operator 2.5.2 from its Go module, a host process) runs spark-submit
(pyspark's, real Java), which creates the driver pod in a namespace that enforces Pod Security
"restricted". No kubelet runs here, so the pod stays Pending: the test reads the pod spec
that Spark built and the API server admitted. Needs `build/bootstrap spark-operator`
(`make test-spark-operator`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import CoreV1Api, CustomObjectsApi

from carstream_operator import builders
from carstream_operator import resources as r
from carstream_operator.model import StageSpec
from carstream_operator.settings import Settings
from tests.chart import budget, helm, test_install
from tests.chart.helm import VALUES_FILES, one
from tests.fixtures.kube import ControlPlane
from tests.spark_operator.controller import Controller, start_controller

pytestmark = pytest.mark.spark_operator

SETTINGS = Settings()
SUBMIT_TIMEOUT_SECONDS = 180


@pytest.fixture
def restricted_namespace(kube_control_plane: ControlPlane, kube_namespace: str) -> str:
    test_install.restricted_namespace(kube_control_plane, kube_namespace)
    return kube_namespace


@pytest.fixture
def controller(
    kube_control_plane: ControlPlane, restricted_namespace: str, tmp_path: Path
) -> Iterator[Controller]:
    process = start_controller(kube_control_plane, restricted_namespace, tmp_path)
    try:
        yield process
    finally:
        custom = CustomObjectsApi(kube_control_plane.api_client())
        listed = custom.list_namespaced_custom_object(
            r.SPARK_GROUP, r.SPARK_VERSION, restricted_namespace, r.SPARK_PLURAL
        )
        for app in listed["items"]:
            process.remove_template_files((app.get("status") or {}).get("submissionID", ""))
        process.stop()
        print(f"--- spark-operator log ---\n{process.log_text()[-6000:]}")


def kind_stage(namespace: str, stage: str) -> StageSpec:
    """A stage of the Pipeline that the chart renders with its kind values."""
    pipeline = one(helm.render(VALUES_FILES["kind"], namespace=namespace), "Pipeline")
    specs = builders.stage_specs(pipeline["metadata"]["name"], pipeline["spec"])
    return StageSpec.from_dict(specs[stage])


def application(namespace: str, spec: StageSpec) -> dict[str, Any]:
    stage_object = r.stage_object_name(spec.pipeline, spec.stage)
    return builders.spark_application(
        name=r.application_name(stage_object, 1),
        namespace=namespace,
        stage_object=stage_object,
        spec=spec,
        run=1,
        restarts=0,
        settings=SETTINGS,
    )


def submit(plane: ControlPlane, app: dict[str, Any]) -> None:
    CustomObjectsApi(plane.api_client()).create_namespaced_custom_object(
        r.SPARK_GROUP, r.SPARK_VERSION, app["metadata"]["namespace"], r.SPARK_PLURAL, app
    )


def wait_for_state(
    plane: ControlPlane, app: dict[str, Any], states: set[str], controller: Controller
) -> dict[str, Any]:
    custom = CustomObjectsApi(plane.api_client())
    name, namespace = app["metadata"]["name"], app["metadata"]["namespace"]
    deadline = time.monotonic() + SUBMIT_TIMEOUT_SECONDS
    state = ""
    while time.monotonic() < deadline:
        current: dict[str, Any] = custom.get_namespaced_custom_object(
            r.SPARK_GROUP, r.SPARK_VERSION, namespace, r.SPARK_PLURAL, name
        )
        state = ((current.get("status") or {}).get("applicationState") or {}).get("state", "")
        if state in states:
            return current
        assert controller.running(), controller.log_text()[-3000:]
        time.sleep(0.5)
    pytest.fail(f"{name} stayed {state or 'without a state'}, not {states}")


def driver_pod(plane: ControlPlane, app: dict[str, Any]) -> Any:
    core = CoreV1Api(plane.api_client())
    name = f"{app['metadata']['name']}-driver"
    return core.read_namespaced_pod(name, app["metadata"]["namespace"])


def executor_template(plane: ControlPlane, namespace: str, pod_name: str) -> dict[str, Any]:
    """The executor pod template that spark-submit hands to the driver in a ConfigMap."""
    core = CoreV1Api(plane.api_client())
    for config_map in core.list_namespaced_config_map(namespace).items:
        owners = [owner.name for owner in config_map.metadata.owner_references or []]
        if pod_name in owners and "podspec-configmap-key" in (config_map.data or {}):
            template: dict[str, Any] = yaml.safe_load(config_map.data["podspec-configmap-key"])
            return template
    raise AssertionError(f"no executor pod template ConfigMap owned by {pod_name}")


def test_an_enrich_application_reaches_its_driver_pod_without_the_webhook(
    kube_control_plane: ControlPlane, restricted_namespace: str, controller: Controller
) -> None:
    plane, namespace = kube_control_plane, restricted_namespace
    spec = kind_stage(namespace, "enrich")
    app = application(namespace, spec)
    submit(plane, app)
    submitted = wait_for_state(plane, app, {"SUBMITTED", "RUNNING"}, controller)
    assert submitted["status"]["driverInfo"]["podName"] == f"{app['metadata']['name']}-driver"

    pod = driver_pod(plane, app)
    # Admitted under "restricted": the pod template's security context reached the pod.
    security = pod.spec.security_context
    assert (security.run_as_non_root, security.run_as_user, security.run_as_group) == (
        True,
        185,
        185,
    )
    assert security.seccomp_profile.type == "RuntimeDefault"
    (container,) = pod.spec.containers
    assert container.name == "spark-kubernetes-driver"
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    # Where a failing stage says why (carstream.termination), kept by Spark from the template.
    assert container.termination_message_policy == "FallbackToLogsOnError"
    assert container.termination_message_path == "/dev/termination-log"

    # The stage's own Kafka user: the password as a reference to its Secret, never a value.
    env = {item.name: item for item in container.env}
    assert env["CARSTREAM_KAFKA_USERNAME"].value == "carstream-enrich"
    password = env["CARSTREAM_KAFKA_PASSWORD"].value_from.secret_key_ref
    assert (password.name, password.key) == ("carstream-enrich", "password")
    assert env["CARSTREAM_KAFKA_PASSWORD"].value is None

    # The Kafka CA (driver.secrets) and the shared volume and node selector (sparkConf).
    volumes = {volume.name: volume for volume in pod.spec.volumes}
    mounts = {mount.mount_path: mount.name for mount in container.volume_mounts}
    ca_volume = volumes[mounts[SETTINGS.kafka_ca_mount_path]]
    assert ca_volume.secret.secret_name == "carstream-cluster-ca-cert"
    data = volumes[mounts["/carstream-data"]]
    assert data.persistent_volume_claim.claim_name == "carstream-data"
    assert pod.spec.node_selector == {"carstream.io/spark-role": "driver"}
    assert pod.spec.service_account_name == "carstream-spark"

    # Resources as the budget test computes them: coreRequest, heap + Spark's overhead.
    requests = container.resources.requests
    assert requests["cpu"] == spec.driver.core_request == "250m"
    assert requests["memory"] == f"{budget.spark_pod_memory_mib(spec.driver.memory)}Mi"

    # What the stage runs: its flags, with the shuffle partitions of the Pipeline's sparkConf.
    args = container.args
    start = args.index("local:///opt/carstream/main.py")
    assert args[start + 1 : start + 3] == ["stage", "enrich"]
    assert args[args.index("--shuffle-partitions") + 1] == "2"
    labels = pod.metadata.labels
    assert labels[r.LABEL_STAGE] == "enrich" and labels[r.LABEL_PIPELINE] == "carstream"
    assert labels["sparkoperator.k8s.io/app-name"] == app["metadata"]["name"]

    # The executors' template travels to the driver in a ConfigMap, with the same settings.
    template = executor_template(plane, namespace, pod.metadata.name)
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    (executor,) = template["spec"]["containers"]
    assert executor["name"] == "spark-kubernetes-executor"
    assert {item["name"] for item in executor["env"]} == {
        "CARSTREAM_KAFKA_USERNAME",
        "CARSTREAM_KAFKA_PASSWORD",
    }


def test_without_its_pod_templates_the_application_is_refused_by_pod_security(
    kube_control_plane: ControlPlane, restricted_namespace: str, controller: Controller
) -> None:
    """The control: the same application with no templates (what needs the webhook) fails to
    submit in a restricted namespace, so the first test's pod owes its admission to them."""
    plane, namespace = kube_control_plane, restricted_namespace
    app = copy.deepcopy(application(namespace, kind_stage(namespace, "detect")))
    for role in ("driver", "executor"):
        del app["spec"][role]["template"]
    submit(plane, app)
    failed = wait_for_state(plane, app, {"SUBMISSION_FAILED", "FAILED"}, controller)
    message = failed["status"]["applicationState"].get("errorMessage", "")
    assert 'violates PodSecurity "restricted' in message, message
