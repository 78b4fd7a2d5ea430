"""The kind values fit the laptop the README names: CPU and memory requests summed from the
rendered umbrella (core chart + spark-operator's real chart) and the Spark pods that the
operator's builders and Spark make of the Pipeline.

kind's nodes are containers on one Docker VM: every node sees all of its CPUs and memory, so
a pod stays Pending only when the requests on its own node exceed the VM's CPUs, while all
pods together share the VM's memory (with kind's own control plane and kubelets).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
import yaml

from carstream import toolchain
from carstream_operator.model import StageSpec
from tests.chart import budget, helm
from tests.chart.budget import Request
from tests.chart.helm import STACK_CHART, STACK_VALUES_FILES, one

README = toolchain.REPO_ROOT / "README.md"
LAPTOP = re.compile(r"\*\*(\d+) CPUs and (\d+) GB of memory\*\*")
REQUESTED = re.compile(r"request \*\*([0-9.]+) CPUs and ([0-9.]+) GiB\*\*")
# What kind itself takes of the VM's memory (control plane, three kubelets, containerd), and
# what each worker's kindnet requests: kind's, not the values', stated in the README.
KIND_ITSELF_GIB = 1.5
KIND_WORKER_CPU = 0.1


@pytest.fixture(scope="module")
def kind_stack(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    chart = helm.assemble_stack(tmp_path_factory.mktemp("stack"))
    return helm.render_stack(chart, STACK_VALUES_FILES["kind"])


def laptop() -> tuple[int, int]:
    found = LAPTOP.findall(README.read_text())
    assert len(found) == 1, "the README names one laptop size: **N CPUs and M GB of memory**"
    cpus, gigabytes = found[0]
    return int(cpus), int(gigabytes)


def finished_before_the_others(specs: Sequence[StageSpec]) -> set[str]:
    """Run-to-completion stages that every other stage waits for (through dependsOn): their
    pods are gone before any other stage starts."""
    needs = {spec.stage: set(spec.depends_on) for spec in specs}

    def upstream(stage: str) -> set[str]:
        found: set[str] = set()
        for parent in needs[stage]:
            found |= {parent} | upstream(parent)
        return found

    return {
        spec.stage
        for spec in specs
        if spec.runs_to_completion
        and all(spec.stage in upstream(other) for other in needs if other != spec.stage)
    }


def starts_no_spark_session(job: str) -> bool:
    """generate is a plain Kafka producer in the driver: it never imports pyspark, so Spark
    requests no executor for it."""
    probe = f"import sys, carstream.stages.{job}; print('pyspark' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return result.stdout.strip() == "False"


def spark_requests(pipeline: Mapping[str, Any]) -> tuple[list[Request], list[Request]]:
    """Driver and executor pods while the stream runs."""
    specs = budget.pipeline_stage_specs(pipeline)
    done = finished_before_the_others(specs)
    assert done == {"dims"}
    drivers, executors = [], []
    for spec in specs:
        if spec.stage in done:
            continue
        driver, *rest = budget.stage_pods(spec, starts_spark=not starts_no_spark_session(spec.job))
        drivers.append(driver)
        executors += rest
    return drivers, executors


def total(requests: Iterable[Request]) -> Request:
    items = list(requests)
    return Request("total", sum(r.cpu for r in items), sum(r.memory_mib for r in items))


def strimzi_operator() -> Request:
    """Strimzi's chart cannot be rendered here: its requests as the umbrella's values set them."""
    values = yaml.safe_load((STACK_CHART / "values.yaml").read_text())
    requests = values["strimzi-kafka-operator"]["resources"]["requests"]
    return Request(
        "strimzi cluster operator",
        budget.cpu(requests["cpu"]),
        budget.memory_mib(requests["memory"]),
    )


def test_generate_starts_no_spark_session_and_count_does() -> None:
    assert starts_no_spark_session("generate")
    assert not starts_no_spark_session("count")


def test_spark_pod_memory_follows_sparks_rule_for_python_applications() -> None:
    assert budget.spark_pod_memory_mib("512m") == 512 + 384
    assert budget.spark_pod_memory_mib("2g") == 2048 + 819
    assert budget.cpu("250m") == 0.25 and budget.memory_mib("1Gi") == 1024


def test_the_kind_values_fit_the_laptop_the_readme_names(kind_stack: list[dict[str, Any]]) -> None:
    cpus, gigabytes = laptop()
    drivers, executors = spark_requests(one(kind_stack, "Pipeline"))
    # Kafka, the operators and the helm test pod have no node selector: on either worker.
    anywhere = [*budget.workload_requests(kind_stack), strimzi_operator()]
    names = {request.what.split(" x")[0] for request in anywhere}
    assert {
        "carstream-operator/operator",
        "carstream-spark-operator-controller/spark-operator-controller",
    } <= names
    assert "carstream-spark-operator-webhook/spark-operator-webhook" in names

    on_driver_node = total([*drivers, *anywhere]).cpu + KIND_WORKER_CPU
    on_executor_node = total([*executors, *anywhere]).cpu + KIND_WORKER_CPU
    assert on_driver_node <= cpus, f"drivers' worker: {on_driver_node:.2f} of {cpus} CPUs"
    assert on_executor_node <= cpus, f"executors' worker: {on_executor_node:.2f} of {cpus} CPUs"

    everything = total([*drivers, *executors, *anywhere])
    assert everything.cpu <= cpus, f"{everything.cpu:.2f} CPUs requested on {cpus}"
    memory_gib = everything.memory_mib / 1024
    assert memory_gib + KIND_ITSELF_GIB <= gigabytes, f"{memory_gib:.1f} GiB + kind's own"

    stated = REQUESTED.findall(README.read_text())
    computed = (f"{everything.cpu:.1f}", f"{memory_gib:.1f}")
    assert stated == [computed], f"the README must state the requests: {computed}"
