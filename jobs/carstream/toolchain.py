"""Where the toolchain bootstrap (build/bootstrap) puts downloaded and built artifacts.

This module is the only code that knows the layout of the cache folder; see DEVELOPERS.md.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ToolchainMissing(RuntimeError):
    """An artifact that `build/bootstrap` should have put in the cache is not there."""


def cache_dir() -> Path:
    configured = os.environ.get("CARSTREAM_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "carstream"


def jar_dir(group: str) -> Path:
    """A folder of jars resolved by Maven: `kafka-broker` or `spark-kafka`."""
    return cache_dir() / "jars" / group


def jars(group: str) -> list[Path]:
    return jar_files(jar_dir(group))


def jar_files(
    folder: Path, hint: str = "run build/bootstrap to resolve them from Maven Central"
) -> list[Path]:
    """The jars in `folder`; a clear error when there are none."""
    found = sorted(folder.glob("*.jar"))
    if not found:
        raise ToolchainMissing(f"no jars in {folder}: {hint}")
    return found


def binary(name: str) -> Path:
    """A Go tool built by the bootstrap: helm, kubeconform, kube-score, kube-apiserver,
    kubectl, etcd; spark-operator after `build/bootstrap spark-operator`; for the local
    cluster also kubelet, kube-controller-manager, kube-scheduler, kube-proxy, coredns and
    pause."""
    path = cache_dir() / "bin" / name
    if not os.access(path, os.X_OK):
        raise ToolchainMissing(f"{path} is missing: run build/bootstrap to build it")
    return path


SPARK_OPERATOR_MODULE = "github.com/kubeflow/spark-operator/v2"
SPARK_OPERATOR_WRAPPER = REPO_ROOT / "build" / "go" / "spark-operator" / "go.mod"


def spark_operator_version() -> str:
    """The spark-operator release the bootstrap builds: the one build/go/spark-operator
    requires, without the v (2.5.2)."""
    for line in SPARK_OPERATOR_WRAPPER.read_text().splitlines():
        words = line.split()
        if words[:1] == [SPARK_OPERATOR_MODULE] and len(words) > 1:  # in the require block
            return words[1].removeprefix("v")
    raise ToolchainMissing(f"{SPARK_OPERATOR_WRAPPER} requires no {SPARK_OPERATOR_MODULE}")


def spark_operator_chart_dir() -> Path:
    """spark-operator's Helm chart, unpacked, from its Go module (its crds/ included)."""
    path = cache_dir() / "charts" / f"spark-operator-{spark_operator_version()}"
    if not (path / "Chart.yaml").is_file():
        raise ToolchainMissing(
            f"{path} is missing: run build/bootstrap spark-operator-chart to unpack it"
        )
    return path


def spark_operator_chart() -> Path:
    """spark-operator's Helm chart as `helm package` made it, for an umbrella's charts/."""
    path = cache_dir() / "charts" / f"spark-operator-{spark_operator_version()}.tgz"
    if not path.is_file():
        raise ToolchainMissing(
            f"{path} is missing: run build/bootstrap spark-operator-chart to package it"
        )
    return path


def base_image_tar() -> Path:
    """The Debian bookworm minbase root file system (`build/bootstrap base-image`) that the
    local cluster imports into docker as debian:bookworm-slim."""
    path = cache_dir() / "images" / "debian-bookworm-slim.tar"
    if not path.is_file():
        raise ToolchainMissing(f"{path} is missing: run build/bootstrap base-image")
    return path


def docker_data_root() -> Path:
    """The data root of the local cluster's dockerd: images and build cache outlive a run."""
    return cache_dir() / "docker"


def kubeconform_schemas_dir() -> Path:
    """Kubernetes JSON schemas in kubeconform's layout, so it never reaches for the network."""
    path = cache_dir() / "kubeconform-schemas"
    if not path.is_dir():
        raise ToolchainMissing(f"{path} is missing: run build/bootstrap to generate it")
    return path


def upstream_crds_dir() -> Path:
    """Strimzi's, spark-operator's and prometheus-operator's CRDs (a folder each), made by
    `build/bootstrap crds` from Maven Central and the Go module proxy."""
    path = cache_dir() / "crds"
    groups = ("strimzi", "spark-operator", "prometheus-operator")
    if not all((path / group).is_dir() for group in groups):
        raise ToolchainMissing(
            f"upstream CRDs are missing from {path}: run build/bootstrap crds to make them"
        )
    return path


def carstream_crds_dir() -> Path:
    return REPO_ROOT / "charts" / "carstream" / "crds"
