"""Fixtures of the operator tests: the operator under test and the spark-operator stand-in,
both in the test's own namespace of the real API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.kube import ControlPlane
from tests.operator.harness import OperatorProcess, SparkOperatorStandIn


@pytest.fixture
def spark_operator(
    kube_control_plane: ControlPlane, kube_namespace: str
) -> Iterator[SparkOperatorStandIn]:
    """Plays spark-operator in the test's namespace: patches SparkApplication states."""
    stand_in = SparkOperatorStandIn(kube_control_plane, kube_namespace)
    try:
        yield stand_in
    finally:
        stand_in.close()


@pytest.fixture
def operator_process(
    kube_control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """`carstream-operator --namespace <the test's namespace>`, running."""
    process = OperatorProcess(kube_control_plane, kube_namespace, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- operator log ({process.log_path}) ---\n{process.log_tail(60)}")
