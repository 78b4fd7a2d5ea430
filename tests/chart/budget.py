"""What the pods of a deployment request: CPU and memory, from rendered objects and values.

Spark pods are not rendered by the chart: the operator's builders make their applications
from the Pipeline, and Spark sizes the pods. Spark 4.2 (BasicDriverFeatureStep,
BasicExecutorFeatureStep) requests for a pod the heap (`memory`) plus an overhead of
max(factor x heap, 384 MiB), where the factor is 0.4 for a Python application (0.1 for a JVM
one), and CPU `coreRequest` if set, else `cores`. tests/spark_operator checks the formula on a
driver pod that spark-submit really created.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from carstream_operator import builders
from carstream_operator.model import PodResources, StageSpec

PYTHON_OVERHEAD_FACTOR = 0.4
MIN_OVERHEAD_MIB = 384
_SPARK_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_MEMORY_UNITS = {
    "": 1 / 2**20,
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024**2,
    "k": 1000 / 2**20,
    "M": 1000**2 / 2**20,
    "G": 1000**3 / 2**20,
}


@dataclass(frozen=True)
class Request:
    """What one pod (or several alike) requests: CPUs and MiB."""

    what: str
    cpu: float
    memory_mib: float

    def times(self, count: int) -> Request:
        return Request(f"{self.what} x{count}", self.cpu * count, self.memory_mib * count)


def spark_memory_mib(size: str) -> int:
    """A Spark size (512m, 1g; no unit: MiB as for spark.driver.memory) in MiB."""
    number, unit = size[:-1], size[-1].lower()
    if unit.isdigit():
        return int(size)
    return int(int(number) * _SPARK_UNITS[unit])


def spark_pod_memory_mib(size: str) -> int:
    """The memory request of a PySpark driver or executor pod whose heap is `size`."""
    heap = spark_memory_mib(size)
    return heap + max(int(PYTHON_OVERHEAD_FACTOR * heap), MIN_OVERHEAD_MIB)


def cpu(quantity: str | float) -> float:
    """A Kubernetes CPU quantity (250m, 0.5, 2) in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_mib(quantity: str | int) -> float:
    """A Kubernetes memory quantity (384Mi, 1Gi, 1G, bytes) in MiB."""
    match = _QUANTITY.match(str(quantity))
    if not match or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def _resource_request(what: str, resources: Mapping[str, Any] | None) -> Request:
    requests = (resources or {}).get("requests") or {}
    return Request(what, cpu(requests.get("cpu", 0)), memory_mib(requests.get("memory", 0)))


def spark_pod(what: str, pod: PodResources) -> Request:
    core_request = pod.core_request if pod.core_request else pod.cores
    return Request(what, cpu(core_request), spark_pod_memory_mib(pod.memory))


def stage_pods(spec: StageSpec, *, starts_spark: bool = True) -> list[Request]:
    """The driver and, when the job starts a Spark session, its executors."""
    pods = [spark_pod(f"{spec.stage} driver", spec.driver)]
    if starts_spark:
        pods.append(
            spark_pod(f"{spec.stage} executor", spec.executor).times(spec.executor.instances)
        )
    return pods


def pipeline_stage_specs(pipeline: Mapping[str, Any]) -> list[StageSpec]:
    name = pipeline["metadata"]["name"]
    return [
        StageSpec.from_dict(spec) for spec in builders.stage_specs(name, pipeline["spec"]).values()
    ]


def workload_requests(objects: Iterable[Mapping[str, Any]]) -> Iterator[Request]:
    """Pods of Deployments (x replicas), bare Pods (helm test), Strimzi's Kafka nodes and
    entity operator."""
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in ("Deployment", "Pod"):
            pod = obj["spec"]["template"]["spec"] if kind == "Deployment" else obj["spec"]
            replicas = int(obj["spec"].get("replicas", 1)) if kind == "Deployment" else 1
            for container in pod["containers"]:
                request = _resource_request(
                    f"{name}/{container['name']}", container.get("resources")
                )
                yield request.times(replicas)
        elif kind == "KafkaNodePool":
            request = _resource_request(f"kafka node {name}", obj["spec"].get("resources"))
            yield request.times(int(obj["spec"]["replicas"]))
        elif kind == "Kafka":
            entity = obj["spec"].get("entityOperator") or {}
            for part in ("topicOperator", "userOperator"):
                if part in entity:
                    yield _resource_request(f"{name} {part}", entity[part].get("resources"))
