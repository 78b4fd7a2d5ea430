"""The repository's Dockerfile, built on the cluster's dockerd and loaded into both nodes:
the carstream CLI runs in a pod, and a Spark cluster-mode job submitted from this host's
pyspark runs its driver on node 1 and its executor on node 2 and computes the right sums."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carstream import toolchain
from localcluster import pki
from localcluster.layout import NODES, ROLE_LABEL
from tests.e2e.harness import E2ECluster

JOB = """\
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("carstream-e2e").getOrCreate()
total = spark.range(0, ROWS, numPartitions=4).selectExpr("sum(id) AS s").collect()[0]["s"]
print("E2E SQL SUM", total)
# a Python function on the executor: Python workers run there
squares = spark.sparkContext.parallelize(range(NUMBERS), 2).map(lambda x: x * x).sum()
print("E2E RDD SUM OF SQUARES", squares)
spark.stop()
"""
ROWS, NUMBERS = 1_000_000, 1000
# The first test builds the image (about 6 minutes from cold caches on 2 busy cores).
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def namespace(cluster: E2ECluster) -> str:
    return cluster.namespace("image")


def test_the_carstream_cli_runs_in_a_pod(
    cluster: E2ECluster, namespace: str, carstream_image: str
) -> None:
    cluster.run_pod(
        namespace, "cli", NODES[1], ["carstream", "--help"], image=carstream_image,
        args_only=True,
    )  # fmt: skip
    pod = cluster.wait_phase(namespace, "cli", {"Succeeded"})
    output = cluster.logs(namespace, "cli")
    assert pod["status"]["phase"] == "Succeeded", output
    assert "usage: carstream" in output


def _spark_rbac_and_job(cluster: E2ECluster, namespace: str) -> None:
    """The driver's ServiceAccount (may manage executor pods, services, config maps) and the
    job script as a ConfigMap, which the driver's pod template mounts."""
    cluster.kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "spark", "namespace": namespace},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "spark-edit", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "edit",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "spark", "namespace": namespace}],
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "e2e-job", "namespace": namespace},
                "data": {"job.py": JOB.replace("ROWS", str(ROWS)).replace("NUMBERS", str(NUMBERS))},
            },
        ]
    )


def _driver_template(path: Path) -> Path:
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {
            "containers": [
                {
                    "name": "spark-kubernetes-driver",
                    "volumeMounts": [{"name": "job", "mountPath": "/opt/e2e"}],
                }
            ],
            "volumes": [{"name": "job", "configMap": {"name": "e2e-job"}}],
        },
    }
    path.write_text(yaml.safe_dump(template))
    return path


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when this test process dies, even by SIGKILL
    (prctl PR_SET_PDEATHSIG), so a killed test run leaves no spark-submit behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def spark_submit(
    cluster: E2ECluster, namespace: str, image: str, template: Path
) -> subprocess.CompletedProcess[str]:
    """spark-submit of this host's .venv (the pinned pyspark) in cluster mode."""
    pki_dir = cluster.run.pki
    conf = {
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.container.image.pullPolicy": "Never",
        "spark.kubernetes.authenticate.driver.serviceAccountName": "spark",
        "spark.kubernetes.authenticate.submission.caCertFile": str(pki_dir / "ca.crt"),
        "spark.kubernetes.authenticate.submission.clientCertFile": str(pki_dir / "admin.crt"),
        "spark.kubernetes.authenticate.submission.clientKeyFile": str(pki_dir / "admin.key"),
        "spark.kubernetes.driver.podTemplateFile": str(template),
        f"spark.kubernetes.driver.node.selector.{ROLE_LABEL}": NODES[0].role,
        f"spark.kubernetes.executor.node.selector.{ROLE_LABEL}": NODES[1].role,
        "spark.kubernetes.executor.deleteOnTermination": "false",
        "spark.executor.instances": "1",
        "spark.kubernetes.driver.request.cores": "0.2",
        "spark.kubernetes.executor.request.cores": "0.2",
        "spark.driver.memory": "512m",
        "spark.executor.memory": "512m",
    }
    command = [
        str(Path(sys.executable).parent / "spark-submit"),
        f"--master=k8s://{pki.server_url()}",
        "--deploy-mode=cluster",
        "--name=carstream-e2e",
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command.append("local:///opt/e2e/job.py")
    pyspark = importlib.util.find_spec("pyspark")
    assert pyspark is not None and pyspark.origin is not None
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=toolchain.REPO_ROOT,
        env={**os.environ, "SPARK_HOME": str(Path(pyspark.origin).parent)},
        preexec_fn=_die_with_parent,
        check=False,
    )


def test_a_spark_cluster_mode_job_runs_driver_on_node_1_and_executor_on_node_2(
    cluster: E2ECluster, namespace: str, carstream_image: str, tmp_path: Path
) -> None:
    _spark_rbac_and_job(cluster, namespace)
    submitted = spark_submit(
        cluster, namespace, carstream_image, _driver_template(tmp_path / "driver.yaml")
    )
    pods = cluster.kubectl.get_json(
        "get", "pods", f"--namespace={namespace}", "--selector=spark-role"
    )["items"]
    roles = {pod["metadata"]["labels"]["spark-role"]: pod for pod in pods}
    assert sorted(roles) == ["driver", "executor"], submitted.stderr[-3000:]
    driver, executor = roles["driver"], roles["executor"]
    log = cluster.logs(namespace, driver["metadata"]["name"])
    assert driver["status"]["phase"] == "Succeeded", log[-3000:]
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert driver["spec"]["nodeName"] == NODES[0].name
    assert executor["spec"]["nodeName"] == NODES[1].name
    lines = [line for line in log.splitlines() if line.startswith("E2E ")]
    assert lines == [
        f"E2E SQL SUM {sum(range(ROWS))}",
        f"E2E RDD SUM OF SQUARES {sum(x * x for x in range(NUMBERS))}",
    ], json.dumps(driver["status"], indent=1)
