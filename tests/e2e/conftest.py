"""The session's cluster: `make e2e` runs these tests (as root), `make test` never collects
them. The `cluster` fixture records the host, starts the real two-node cluster, and ALWAYS
brings it down and restores the host at the end, also when a test or `up` itself failed.
A run killed with SIGKILL leaves its state in the run directory: the next session (or
`python -m localcluster down`) brings that down first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import E2ECluster, started_cluster
from tests.e2e.stack import CARSTREAM_IMAGE, build_carstream_image

_timings: dict[str, float] = {}


# Pods and the network first (they fail fast when the cluster is broken), then the image
# (its build takes minutes), and the teardown test, which brings the cluster down, last.
MODULE_ORDER = (
    "test_pods.py",
    "test_carstream_image.py",
    "test_pipeline.py",
    "test_teardown.py",
)


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
    with started_cluster(_timings) as handle:
        yield handle


@pytest.fixture(scope="session")
def carstream_image(cluster: E2ECluster) -> str:
    """The repository's Dockerfile built on the cluster's dockerd, loaded into both nodes."""
    _timings.update(build_carstream_image(cluster))
    return CARSTREAM_IMAGE


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    """Durations worth reporting (seconds), printed at the end of the run."""
    return _timings
