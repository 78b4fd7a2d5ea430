"""carstream on the local cluster, installed as the README's walkthrough installs it: the
carstream and spark-operator images built and loaded into the nodes, the umbrella chart
assembled offline (scripts/stack_chart.py, without Strimzi's chart), `helm install` with
charts/carstream-stack/values-local.yaml into a namespace that enforces Pod Security
`restricted`. Plus what the checks need: the custom resources' status, the Kafka topics read
from this host through the broker's node ports, the warehouse and checkpoints in the bucket of
the chart's S3 server through its node port."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from carstream import toolchain
from carstream.config import KafkaSettings, S3Settings, StorageSettings
from carstream.kafka_admin import TopicAdmin
from carstream_operator import resources as r
from localcluster import images
from localcluster.kubectl import Kubectl
from tests.e2e.harness import E2ECluster, ca_bundle_for_builds
from tests.fixtures.waiting import wait_for

REPO = toolchain.REPO_ROOT
NAMESPACE = "carstream"
RELEASE = "carstream"
PIPELINE = "carstream"
STACK_VALUES = REPO / "charts" / "carstream-stack" / "values-local.yaml"
SPARK_OPERATOR_IMAGE = "carstream-spark-operator:2.5.2"
SPARK_OPERATOR_DOCKERFILE = REPO / "build" / "images" / "spark-operator" / "Dockerfile"
S3_SERVER_IMAGE = "carstream-s3-server:1.8.0"
S3_SERVER_DOCKERFILE = REPO / "build" / "images" / "s3-server" / "Dockerfile"
# Where the host reaches the chart's S3 server: node 1's address, values-local.yaml's node port.
S3_ENDPOINT = "http://10.200.0.1:30070"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}
# kubectl is a process per poll: every 2 s is often enough for pods that take seconds.
POLL_SECONDS = 2.0


# The tag the chart's values-local.yaml (and values-kind.yaml) run: the chart's appVersion.
# Built with the Dockerfile's default jars: the Kafka connector and s3a (hadoop-aws, AWS SDK).
CARSTREAM_IMAGE = "carstream:0.1.0"


def local_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(STACK_VALUES.read_text())
    return loaded


def build_carstream_image(cluster: E2ECluster) -> dict[str, float]:
    """The repository's Dockerfile built on the cluster's dockerd, loaded into both nodes;
    returns how long each took."""
    ca = ca_bundle_for_builds()
    built = images.build_image(
        cluster.run,
        CARSTREAM_IMAGE,
        REPO / "Dockerfile",
        REPO,
        secrets={"extra-ca": ca} if ca else {},
    )
    loaded = images.load_image(cluster.run, CARSTREAM_IMAGE)
    return {"image build": built, "image load (both nodes)": loaded}


def build_binary_image(
    cluster: E2ECluster,
    tag: str,
    dockerfile: Path,
    binary: str,
    work: Path,
    build_args: dict[str, str] | None = None,
) -> float:
    """An image of build/images/ whose build context is one binary of the bootstrap, built
    and loaded into both nodes; returns how long that took."""
    context = work / f"{binary}-context"
    context.mkdir(parents=True, exist_ok=True)
    (context / binary).write_bytes(toolchain.binary(binary).read_bytes())
    seconds = images.build_image(cluster.run, tag, dockerfile, context, build_args=build_args)
    return seconds + images.load_image(cluster.run, tag)


def assemble_chart(work: Path) -> Path:
    """The umbrella chart with the core chart and spark-operator's chart in its charts/."""
    out = work / "chart"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "stack_chart.py"),
            str(out),
            "--without",
            "strimzi-kafka-operator",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out / "carstream-stack"


@dataclass
class Stack:
    cluster: E2ECluster
    chart: Path
    values_files: tuple[Path, ...]
    installed_at: float = 0.0  # time.monotonic() when `helm install` started
    uninstalled: bool = False

    @property
    def kubectl(self) -> Kubectl:
        return self.cluster.kubectl

    # -- helm --------------------------------------------------------------------------------

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                str(toolchain.binary("helm")),
                f"--kubeconfig={self.cluster.run.admin_kubeconfig}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def install(self) -> str:
        """`helm install` as the README's walkthrough runs it; returns helm's output."""
        value_args = [arg for path in self.values_files for arg in ("--values", str(path))]
        return self.helm(
            "install",
            RELEASE,
            str(self.chart),
            f"--namespace={NAMESPACE}",
            *value_args,
        ).stdout

    # -- objects -----------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Any:
        return self.kubectl.get_json("get", kind, name, f"--namespace={NAMESPACE}")

    def items(self, kind: str, *selectors: str) -> list[Any]:
        found = self.kubectl.get_json("get", kind, f"--namespace={NAMESPACE}", *selectors)
        items: list[Any] = found["items"]
        return items

    def stage(self, stage: str, pipeline: str = PIPELINE) -> dict[str, Any]:
        """The status of a PipelineStage ({} before the operator wrote one)."""
        found = self.get("pipelinestage", r.stage_object_name(pipeline, stage))
        status: dict[str, Any] = found.get("status") or {}
        return status

    def wait_stage(
        self,
        stage: str,
        condition: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        pipeline: str = PIPELINE,
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            try:
                last = self.stage(stage, pipeline)
            except Exception:  # not created yet
                return None
            return last if condition(last) else None

        try:
            return wait_for(check, f"stage {stage} to be {what}", timeout, POLL_SECONDS)
        except AssertionError as error:
            raise AssertionError(f"{error}; its status:\n{json.dumps(last, indent=1)}") from None

    def events(self, involved: str) -> list[dict[str, Any]]:
        return self.items("events", f"--field-selector=involvedObject.name={involved}")

    def driver_pod(self, application: str) -> dict[str, Any] | None:
        selector = f"sparkoperator.k8s.io/app-name={application},spark-role=driver"
        pods = self.items("pods", f"--selector={selector}")
        return pods[0] if pods else None

    def patch_pipeline(self, patch: dict[str, Any], pipeline: str = PIPELINE) -> None:
        self.kubectl(
            "patch",
            "pipeline",
            pipeline,
            f"--namespace={NAMESPACE}",
            "--type=merge",
            f"--patch={json.dumps(patch)}",
        )

    def secret_value(self, name: str, key: str) -> str:
        data = self.get("secret", name)["data"]
        return base64.b64decode(data[key]).decode()

    # -- Kafka from this host ----------------------------------------------------------------

    def kafka(self, user: str) -> KafkaSettings:
        """Kafka settings of the SCRAM user `user` (a Secret of the chart), through the
        external listener's node port."""
        listener = local_values()["carstream"]["kafka"]["externalListener"]
        return KafkaSettings(
            bootstrap_servers=f"{listener['advertisedHost']}:{listener['bootstrapNodePort']}",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            username=user,
            password=self.secret_value(user, "password"),
        )

    def end_offset(self, topic: str) -> int:
        """Records ever written to `topic` (its partitions' end offsets summed), asked as the
        chart's read-only viewer."""
        admin = TopicAdmin(self.kafka("carstream-viewer"))
        try:
            return admin.end_offsets([topic])[topic]
        finally:
            admin.close()

    def storage(self) -> StorageSettings:
        """The pods' warehouse as this host reaches it: the chart's S3 server through its node
        port. Its root keys become this process's AWS environment (boto3 reads it)."""
        secret = self.get("secret", f"{RELEASE}-s3-credentials")["data"]
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ[name] = base64.b64decode(secret[name]).decode()
        warehouse = local_values()["carstream"]["storage"]["warehouse"]
        return StorageSettings(warehouse=warehouse, s3=S3Settings(endpoint=S3_ENDPOINT))

    def checkpoint(self, stage: str) -> str:
        root = local_values()["carstream"]["storage"]["checkpointRoot"]
        return f"{root}/{PIPELINE}/{stage}"


def create_restricted_namespace(cluster: E2ECluster) -> None:
    """The release's namespace, enforcing Pod Security `restricted` (as the chart's notes ask)."""
    labels = [f"{key}={value}" for key, value in RESTRICTED.items()]
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("label", "namespace", NAMESPACE, *labels)


def install(
    cluster: E2ECluster, carstream_image: str, work: Path, values: dict[str, Any]
) -> tuple[Stack, dict[str, float]]:
    """The README's walkthrough on the cluster: spark-operator's and the S3 server's images, the
    restricted namespace, the umbrella chart, `helm install` with values-local.yaml and then
    `values` (a values file's content); returns the installed stack and how long steps took."""
    timings = {
        "spark-operator image build + load": build_binary_image(
            cluster,
            SPARK_OPERATOR_IMAGE,
            SPARK_OPERATOR_DOCKERFILE,
            "spark-operator",
            work,
            build_args={"CARSTREAM_IMAGE": carstream_image},
        ),
        "s3-server image build + load": build_binary_image(
            cluster, S3_SERVER_IMAGE, S3_SERVER_DOCKERFILE, "versitygw", work
        ),
    }
    create_restricted_namespace(cluster)
    extra = work / "values-extra.yaml"
    extra.write_text(yaml.safe_dump(values))
    stack = Stack(cluster, assemble_chart(work), (STACK_VALUES, extra))
    started = time.monotonic()
    notes = stack.install()
    assert "STATUS: deployed" in notes, notes
    stack.installed_at = started
    return stack, timings


def uninstall_quietly(stack: Stack) -> None:
    """`helm uninstall` unless done, bounded; the cluster's teardown removes what is left."""
    if stack.uninstalled:
        return
    try:
        stack.helm("uninstall", RELEASE, f"--namespace={NAMESPACE}", "--timeout=2m", timeout=150)
        stack.uninstalled = True
    except (AssertionError, subprocess.TimeoutExpired) as error:
        print(f"helm uninstall failed: {error}")
