"""A failed Spark driver as the API server holds it, for tests that play spark-operator and
the kubelet: the driver pod (named as Spark names it) whose container terminated with a
termination message, and spark-operator's FAILED state of the application, which carries
only the exit code (spark-operator 2.5.2, internal/controller/sparkapplication/controller.go).
"""

from __future__ import annotations

from kubernetes.client import CoreV1Api, CustomObjectsApi

from carstream_operator import resources as r
from carstream_operator.builders import DRIVER_CONTAINER

IMAGE = "carstream:test"


def driver_pod_name(application: str) -> str:
    return f"{application}-driver"


def create_failed_driver_pod(
    core: CoreV1Api, namespace: str, application: str, message: str, exit_code: int = 1
) -> str:
    """The driver pod of `application`, its container terminated with `message` in the pod's
    status (what the kubelet copies from the termination message file); returns its name."""
    name = driver_pod_name(application)
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"spark-role": "driver"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 185,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": DRIVER_CONTAINER,
                        "image": IMAGE,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
    )
    terminated = {"exitCode": exit_code, "reason": "Error", "message": message}
    core.patch_namespaced_pod_status(
        name,
        namespace,
        {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": DRIVER_CONTAINER,
                        "image": IMAGE,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        },
    )
    return name


def mark_failed(
    custom: CustomObjectsApi, namespace: str, application: str, driver_pod: str, exit_code: int = 1
) -> None:
    """spark-operator's status of an application whose driver pod failed."""
    error = f"driver container failed with ExitCode: {exit_code}, Reason: Error"
    custom.patch_namespaced_custom_object_status(
        r.SPARK_GROUP,
        r.SPARK_VERSION,
        namespace,
        r.SPARK_PLURAL,
        application,
        {
            "status": {
                "applicationState": {"state": "FAILED", "errorMessage": error},
                "driverInfo": {"podName": driver_pod},
            }
        },
    )
