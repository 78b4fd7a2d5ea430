"""spark-operator's real controller as a process on this host, against the test API server.

`controller start` is the controller alone: no webhook (that is `webhook start`), so what it
submits shows what carstream's SparkApplications do without spark-operator's mutating
webhook. It runs spark-submit from SPARK_HOME (the venv's pyspark) for each application;
spark-submit creates the driver pod. With no kubelet here the pod never runs, but it exists
with the spec Spark built, after the API server's admission (Pod Security included).

On a host, spark-operator takes the master URL from KUBERNETES_SERVICE_HOST/PORT (in a pod
Kubernetes sets them), and spark-submit's Kubernetes client reads its credentials from
KUBECONFIG, as the controller does.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyspark

from carstream import toolchain
from tests.fixtures.kube import (
    ControlPlane,
    LoggedProcess,
    free_ports,
    install_crds,
    start_logged,
)

# Where the controller writes the pod template files of a submission (submission.go); it
# removes each submission's folder itself once spark-submit has run.
POD_TEMPLATE_ROOT = Path("/tmp/spark")


@dataclass
class Controller:
    process: LoggedProcess
    created_template_root: bool

    def running(self) -> bool:
        return self.process.running()

    def log_text(self) -> str:
        return self.process.log.read_text(errors="replace")

    def remove_template_files(self, submission_id: str) -> None:
        """The pod template files of one submission: the controller removes them itself
        after spark-submit only when the application has templates of its own."""
        if submission_id:
            shutil.rmtree(POD_TEMPLATE_ROOT / submission_id, ignore_errors=True)

    def stop(self) -> None:
        """Stops the controller (by its PID) and removes /tmp/spark if it made it and it is
        empty again."""
        self.process.stop()
        made_here = self.created_template_root and POD_TEMPLATE_ROOT.is_dir()
        if made_here and not any(POD_TEMPLATE_ROOT.iterdir()):
            POD_TEMPLATE_ROOT.rmdir()


def spark_home() -> Path:
    """The pyspark package: a complete Spark with bin/spark-submit."""
    return Path(pyspark.__file__).resolve().parent


def controller_env(plane: ControlPlane) -> dict[str, str]:
    server = urlparse(plane.server)
    java = shutil.which("java")
    if java is None:
        raise toolchain.ToolchainMissing("java is not on PATH: spark-submit needs Java 17+")
    return {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "KUBERNETES_SERVICE_HOST": str(server.hostname),
        "KUBERNETES_SERVICE_PORT": str(server.port),
        "SPARK_HOME": str(spark_home()),
    }


def install_spark_connect_crd(plane: ControlPlane) -> None:
    """The controller also runs a SparkConnect controller, which fails to start without its
    CRD; the test API server has only the kinds carstream uses (build/bootstrap crds)."""
    crds = toolchain.spark_operator_chart_dir() / "crds"
    install_crds(plane, [crds / "sparkoperator.k8s.io_sparkconnects.yaml"])


def start_controller(plane: ControlPlane, namespace: str, workdir: Path) -> Controller:
    binary = toolchain.binary("spark-operator")
    install_spark_connect_crd(plane)
    (health_port,) = free_ports(1)
    created_root = not POD_TEMPLATE_ROOT.exists()
    command = [
        str(binary),
        "controller",
        "start",
        f"--kubeconfig={plane.kubeconfig}",
        f"--namespaces={namespace}",
        "--controller-threads=2",
        "--enable-ui-service=false",
        "--leader-election=false",
        f"--health-probe-bind-address=127.0.0.1:{health_port}",
        "--metrics-bind-address=0",
        "--zap-log-level=info",
    ]
    process = start_logged("spark-operator", command, workdir, controller_env(plane))
    controller = Controller(process, created_root)
    deadline = time.monotonic() + 60
    while "Starting workers" not in controller.log_text():
        if not controller.running() or time.monotonic() > deadline:
            controller.stop()
            raise AssertionError(f"spark-operator did not start:\n{controller.log_text()[-3000:]}")
        time.sleep(0.2)
    return controller
