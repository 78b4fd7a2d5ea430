"""`python -m carstream_operator.uninstall` (the chart's pre-delete hook) on the real API
server: the Pipelines and their stages go, whether the operator lets them go or not."""

from __future__ import annotations

import pytest

from carstream_operator import resources as r
from carstream_operator import uninstall
from tests.fixtures.kube import ControlPlane
from tests.operator.examples import pipeline_spec
from tests.operator.harness import OperatorProcess, SparkOperatorStandIn, wait_for


@pytest.fixture
def kubeconfig(kube_control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_control_plane.kubeconfig))


def _finalized(spark_operator: SparkOperatorStandIn, name: str) -> bool:
    pipeline = spark_operator.get_pipeline(name)
    objects = [*([pipeline] if pipeline else []), *spark_operator.stages()]
    return len(objects) == 3 and all(
        r.FINALIZER in (o["metadata"].get("finalizers") or []) for o in objects
    )


def _finalized_pipeline(spark_operator: SparkOperatorStandIn, name: str) -> None:
    """A two-stage Pipeline, once the operator holds its finalizer on it and both stages."""
    spark_operator.create_pipeline(
        name, pipeline_spec(stages=[{"name": "dims"}, {"name": "enrich"}])
    )
    wait_for(lambda: _finalized(spark_operator, name), "the operator's finalizers")


def test_with_the_operator_running_everything_goes(
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
    kubeconfig: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _finalized_pipeline(spark_operator, "old")

    assert uninstall.main(["--namespace", spark_operator.namespace, "--timeout", "60"]) == 0
    assert spark_operator.get_pipeline("old") is None
    assert spark_operator.stages() == []
    out = capsys.readouterr().out
    assert "deleting 3 objects" in out
    assert "removing its finalizer" not in out, "the operator let them go itself"


def test_without_the_operator_its_finalizer_is_removed_after_the_timeout(
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
    kubeconfig: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _finalized_pipeline(spark_operator, "orphan")
    operator_process.kill()  # SIGKILL: its finalizers stay

    assert uninstall.main(["--namespace", spark_operator.namespace, "--timeout", "2"]) == 0
    assert spark_operator.get_pipeline("orphan") is None
    assert spark_operator.stages() == []
    assert "removing its finalizer" in capsys.readouterr().out


def test_a_bad_timeout_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        uninstall.main(["--namespace", "x", "--timeout", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: python -m carstream_operator.uninstall")
