"""Running helm and kubectl from the toolchain cache, and rendering the charts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from carstream import toolchain

CHART = toolchain.REPO_ROOT / "charts" / "carstream"
STACK_CHART = toolchain.REPO_ROOT / "charts" / "carstream-stack"
K8S = toolchain.REPO_ROOT / "k8s"
RELEASE = "carstream"
NAMESPACE = "carstream"

STANDALONE_VALUES = CHART / "values-standalone.yaml"
VALUES_FILES: Mapping[str, tuple[Path, ...]] = {
    "default": (),
    "kind": (CHART / "values-kind.yaml",),
    "eks": (CHART / "values-eks.yaml",),
    "local": (CHART / "values-local.yaml",),
    # Kafka without Strimzi (kafka.mode standalone), on kind.
    "kind-standalone": (CHART / "values-kind.yaml", STANDALONE_VALUES),
}
# The profiles whose Kafka is the chart's own broker (kafka.mode standalone), not Strimzi's.
STANDALONE_PROFILES = frozenset({"kind-standalone", "local"})
STACK_VALUES_FILES: Mapping[str, tuple[Path, ...]] = {
    "default": (),
    "kind": (STACK_CHART / "values-kind.yaml",),
    "eks": (STACK_CHART / "values-eks.yaml",),
    "local": (STACK_CHART / "values-local.yaml",),
}
# Strimzi's chart cannot be fetched here (quay.io): the umbrella is assembled without it.
OFFLINE_STACK_WITHOUT = ("strimzi-kafka-operator",)


class ToolFailed(AssertionError):
    """A helm or kubectl call exited non-zero; the message carries its output."""


def run(
    tool: str,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    command = [str(toolchain.binary(tool)), *map(str, args)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        input=input_text,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ToolFailed(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def helm(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run("helm", *args, **kwargs)


def kubectl(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run("kubectl", *args, **kwargs)


def value_args(values_files: Iterable[Path] = (), set_values: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in set_values:
        args += ["--set", assignment]
    return args


def template(
    values_files: Iterable[Path] = (),
    set_values: Sequence[str] = (),
    *,
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
) -> str:
    return helm(
        "template",
        RELEASE,
        CHART,
        "--namespace",
        namespace,
        *value_args(values_files, set_values),
        *extra,
    ).stdout


def assemble_stack(out: Path, without: Sequence[str] = OFFLINE_STACK_WITHOUT) -> Path:
    """The umbrella with its dependencies in charts/, by scripts/stack_chart.py: the core
    chart and spark-operator's real chart (from its Go module, in the toolchain cache)."""
    script = toolchain.REPO_ROOT / "scripts" / "stack_chart.py"
    command = [sys.executable, str(script), str(out)]
    for name in without:
        command += ["--without", name]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolFailed(f"{' '.join(command)} exited {result.returncode}\n{result.stderr}")
    return Path(result.stdout.strip())


def render_stack(
    chart: Path,
    values_files: Iterable[Path] = (),
    set_values: Sequence[str] = (),
    *,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """The objects `helm install` of an assembled umbrella would create (hooks included)."""
    without = [f"{name}.enabled=false" for name in OFFLINE_STACK_WITHOUT]
    text = helm(
        "template",
        RELEASE,
        chart,
        "--namespace",
        namespace,
        *value_args(values_files, [*without, *set_values]),
    ).stdout
    return documents(text)


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(
    values_files: Iterable[Path] = (),
    set_values: Sequence[str] = (),
    *,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """The objects `helm install` would create (test hooks included)."""
    return documents(template(values_files, set_values, namespace=namespace))


def by_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
