"""Runs last (see conftest): brings the cluster down and checks that the host is exactly as
it was before `up`, and that nothing the cluster started still runs."""

from __future__ import annotations

from localcluster import host
from tests.e2e.harness import E2ECluster


def test_teardown_restores_the_host_and_leaves_no_process(cluster: E2ECluster) -> None:
    assert cluster.down() == []
    assert host.differences(cluster.host_before, host.snapshot()) == []
    assert cluster.leftover_processes() == []
    assert not cluster.run.state_file.exists()
    assert not cluster.run.snapshot_file.exists()
