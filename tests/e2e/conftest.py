"""The session's cluster: `make e2e` runs these tests (as root), `make test` never collects
them. The `cluster` fixture records the host, starts the real two-node cluster, and ALWAYS
brings it down and restores the host at the end, also when a test or `up` itself failed.
A run killed with SIGKILL leaves its state in the run directory: the next session (or
`python -m localcluster down`) brings that down first."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from carstream import toolchain
from localcluster import cluster as local_cluster
from localcluster import host, images
from localcluster.layout import RunDir
from tests.e2e.harness import E2ECluster, ca_bundle_for_builds, running_programs

CARSTREAM_IMAGE = "carstream:e2e"
# The Kafka connector only: the AWS SDK bundle (686 MB) is not needed on this cluster.
IMAGE_BUILD_ARGS = {"JAR_GROUPS": "spark-kafka"}

_timings: dict[str, float] = {}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# Pods and the network first (they fail fast when the cluster is broken), then the image
# (its build takes minutes), and the teardown test, which brings the cluster down, last.
MODULE_ORDER = ("test_pods.py", "test_carstream_image.py", "test_teardown.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        return MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _timings:
        terminalreporter.write_sep("-", "local cluster timings")
        for name, seconds in _timings.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")


@pytest.fixture(scope="session")
def cluster() -> Iterator[E2ECluster]:
    run = RunDir.default()
    if run.state_file.exists() or run.snapshot_file.exists():
        leftover = local_cluster.down(run)
        assert not leftover, f"a previous run's cluster could not be brought down: {leftover}"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    handle = E2ECluster(run, host.snapshot(), running_programs())
    try:
        timings = local_cluster.up(run)
        _timings.update({f"up: {k}": v for k, v in timings.phases.items()})
        _timings["up: total"] = sum(timings.phases.values())
        yield handle
    finally:
        problems = handle.down()
        signal.signal(signal.SIGTERM, previous)
        assert not problems, "the host was not restored:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def carstream_image(cluster: E2ECluster) -> str:
    """The repository's Dockerfile built on the cluster's dockerd, loaded into both nodes."""
    ca = ca_bundle_for_builds()
    _timings["image build"] = images.build_image(
        cluster.run,
        CARSTREAM_IMAGE,
        toolchain.REPO_ROOT / "Dockerfile",
        toolchain.REPO_ROOT,
        build_args=IMAGE_BUILD_ARGS,
        secrets={"extra-ca": ca} if ca else {},
    )
    _timings["image load (both nodes)"] = images.load_image(cluster.run, CARSTREAM_IMAGE)
    return CARSTREAM_IMAGE
