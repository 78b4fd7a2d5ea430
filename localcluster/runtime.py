"""The container runtimes: dockerd for image builds, and one containerd per node for pods.

dockerd gets its own socket, exec root and pid file in the run directory and keeps its data
root (images, build cache) in the toolchain cache, so a second `up` builds from warm caches.
The docker CLI is Debian's /usr/bin/docker (20.10, the daemon's own version, with BuildKit
built in): a newer CLI elsewhere on PATH would want the buildx plugin for BuildKit.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence

from carstream import toolchain
from localcluster import configs
from localcluster.layout import DOCKER_CGROUP_PARENT, PAUSE_IMAGE, Node, RunDir
from localcluster.processes import ClusterError, State, start, tail, wait_for

DOCKER_CLI = "/usr/bin/docker"
K8S_NAMESPACE = "k8s.io"


def require_programs(names: Sequence[str]) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise ClusterError(
            f"{', '.join(missing)} not found: run 'build/bootstrap debian-packages' (as root)"
        )


def docker_env(run: RunDir) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": f"unix://{run.docker_socket}", "DOCKER_BUILDKIT": "1"}


def docker(run: RunDir, *args: str, timeout: float = 600, **kwargs: object) -> str:
    """`docker ARGS` against the cluster's dockerd; its output, or ClusterError."""
    result = subprocess.run(
        [DOCKER_CLI, *args],
        capture_output=True,
        text=True,
        env=docker_env(run),
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise ClusterError(f"docker {' '.join(args)} failed:\n{result.stderr.strip()}")
    return str(result.stdout)


def start_dockerd(run: RunDir, state: State) -> None:
    data_root = toolchain.docker_data_root()
    data_root.mkdir(parents=True, exist_ok=True)
    run.docker_exec_root.mkdir(parents=True, exist_ok=True)
    record = start(
        "dockerd",
        [
            "dockerd",
            f"--data-root={data_root}",
            f"--exec-root={run.docker_exec_root}",
            f"--host=unix://{run.docker_socket}",
            f"--pidfile={run.docker_pidfile}",
            f"--cgroup-parent={DOCKER_CGROUP_PARENT}",
            "--log-level=warn",
        ],
        run.logs / "dockerd.log",
        state,
        run.state_file,
    )

    def ready() -> bool:
        probe = subprocess.run(
            [DOCKER_CLI, "version"], capture_output=True, env=docker_env(run), check=False
        )
        return probe.returncode == 0

    if not wait_for(ready, 60):
        raise ClusterError(f"dockerd (pid {record.pid}) not ready in 60 s\n{tail(record.log)}")


def ctr_command(run: RunDir, node: Node) -> list[str]:
    return ["ctr", f"--address={run.containerd_socket(node)}", f"--namespace={K8S_NAMESPACE}"]


def ctr(run: RunDir, node: Node, *args: str) -> str:
    """`ctr` against a node's containerd, in the kubelet's k8s.io namespace."""
    result = subprocess.run(
        [*ctr_command(run, node), *args], capture_output=True, check=False, timeout=900
    )
    if result.returncode != 0:
        raise ClusterError(
            f"ctr {' '.join(args)} on {node.name} failed:\n{result.stderr.decode().strip()}"
        )
    return result.stdout.decode()


def start_containerd(run: RunDir, node: Node, state: State) -> None:
    config = configs.write(
        run.node_dir(node) / "containerd.toml",
        "containerd.toml",
        node_dir=run.node_dir(node),
        socket=run.containerd_socket(node),
        pause_image=PAUSE_IMAGE,
        cni_conf_dir=run.cni_conf_dir(node),
    )
    record = start(
        f"containerd-{node.name}",
        ["containerd", f"--config={config}"],
        run.logs / f"containerd-{node.name}.log",
        state,
        run.state_file,
    )

    def ready() -> bool:
        probe = subprocess.run(
            ["ctr", f"--address={run.containerd_socket(node)}", "version"],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    if not wait_for(ready, 60):
        raise ClusterError(f"containerd of {node.name} not ready in 60 s\n{tail(record.log)}")


def stop_containers(run: RunDir, node: Node) -> None:
    """Kills and deletes every task and container left in a node's containerd (the kubelet
    removes its pods when drained; this catches what a crash left)."""
    if not run.containerd_socket(node).exists():
        return
    try:
        tasks = ctr(run, node, "tasks", "list", "--quiet").split()
    except ClusterError:
        return
    for task in tasks:
        subprocess.run(
            [*ctr_command(run, node), "tasks", "kill", "--signal=SIGKILL", task],
            capture_output=True,
            check=False,
        )
    for task in tasks:
        wait_for(functools.partial(_task_stopped, run, node, task), 15)
        subprocess.run(
            [*ctr_command(run, node), "tasks", "delete", "--force", task],
            capture_output=True,
            check=False,
        )


def _task_stopped(run: RunDir, node: Node, task: str) -> bool:
    try:
        listing = ctr(run, node, "tasks", "list")
    except ClusterError:
        return True
    return not any(
        line.split()[0] == task and "RUNNING" in line for line in listing.splitlines()[1:]
    )
