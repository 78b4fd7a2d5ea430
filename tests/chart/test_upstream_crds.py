"""The Strimzi and spark-operator CRDs that the chart tests and the test API server use are
the files published in the pinned releases: `build/bootstrap crds` makes them from the
registries, and their sha256 must be those listed in build/upstream-crds.sha256."""

from __future__ import annotations

import hashlib

import yaml

from carstream import toolchain

SUMS = toolchain.REPO_ROOT / "build" / "upstream-crds.sha256"


def _published() -> dict[str, str]:
    listed: dict[str, str] = {}
    for line in SUMS.read_text().splitlines():
        if line and not line.startswith("#"):
            digest, name = line.split()
            listed[name] = digest
    return listed


def test_the_crds_in_use_are_the_published_ones() -> None:
    crds = toolchain.upstream_crds_dir()
    in_use = {
        path.relative_to(crds).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(crds.glob("*/*.yaml"))
    }
    assert in_use == _published()


def test_the_published_crds_define_the_kinds_the_chart_renders() -> None:
    crds = toolchain.upstream_crds_dir()
    kinds = {
        document["spec"]["names"]["kind"]
        for path in crds.glob("*/*.yaml")
        for document in yaml.safe_load_all(path.read_text())
    }
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "SparkApplication"} <= kinds
