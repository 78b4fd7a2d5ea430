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
    found = sorted(jar_dir(group).glob("*.jar"))
    if not found:
        raise ToolchainMissing(
            f"no jars in {jar_dir(group)}: run build/bootstrap to resolve them from Maven Central"
        )
    return found


def binary(name: str) -> Path:
    """A Go tool built by the bootstrap: helm, kubeconform, kube-score, kube-apiserver,
    kubectl, etcd; for the local cluster also kubelet, kube-controller-manager,
    kube-scheduler, kube-proxy, coredns and pause."""
    path = cache_dir() / "bin" / name
    if not os.access(path, os.X_OK):
        raise ToolchainMissing(f"{path} is missing: run build/bootstrap to build it")
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
    """Strimzi and spark-operator CRDs, shared with this checkout, never copied into it."""
    configured = os.environ.get("CARSTREAM_UPSTREAM_CRDS")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "crds"
    if not path.is_dir():
        raise ToolchainMissing(
            f"upstream CRDs not found at {path}: set CARSTREAM_UPSTREAM_CRDS to the folder "
            "holding strimzi/ and spark-operator/"
        )
    return path


def carstream_crds_dir() -> Path:
    return REPO_ROOT / "charts" / "carstream" / "crds"
