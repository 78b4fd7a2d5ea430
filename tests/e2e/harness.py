"""What the end-to-end tests do with the cluster: pods from a few fields, waiting for their
phase, their logs, fresh namespaces; and the record of what ran before the cluster started."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from localcluster import cluster, host
from localcluster.kubectl import Kubectl
from localcluster.layout import ROLE_LABEL, Node, RunDir
from localcluster.processes import ProcessRecord, State, is_running, processes_mentioning

# Container states a pod does not leave by waiting.
STUCK = {
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
}

# Programs of the cluster: none of them may run after teardown unless it ran before.
CLUSTER_PROGRAMS = {
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "runc",
    "etcd",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
    "pause",
}


def running_programs() -> dict[int, str]:
    """PID -> name (comm, at most 15 characters) of every process."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "comm").read_text().strip()
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


@dataclass
class E2ECluster:
    run: RunDir
    host_before: host.HostState
    programs_before: dict[int, str]
    down_problems: list[str] | None = None
    recorded: list[ProcessRecord] = field(default_factory=list)

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.run)

    def down(self) -> list[str]:
        """Brings the cluster down once; later calls return the first result."""
        if self.down_problems is None:
            state = State.load(self.run.state_file)
            self.recorded = state.processes if state else []
            self.down_problems = cluster.down(self.run)
        return self.down_problems

    def leftover_processes(self) -> list[str]:
        """What still runs of the cluster: a recorded process, anything whose command line
        names the run directory, and any cluster program that did not run before `up` and
        is our child or an orphan (other people's tests may run etcd and kube-apiserver of
        their own on this machine meanwhile)."""
        left = [f"{r.pid} {r.name} (recorded)" for r in self.recorded if is_running(r)]
        for pid, name in running_programs().items():
            new = name in CLUSTER_PROGRAMS and self.programs_before.get(pid) != name
            if new and parent_pid(pid) in {1, os.getpid()}:
                left.append(f"{pid} {name}")
        left += [
            f"{pid} (mentions {self.run.root})" for pid in processes_mentioning(str(self.run.root))
        ]
        return left

    # -- pods ------------------------------------------------------------------------------

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        return name

    def run_pod(
        self,
        namespace: str,
        name: str,
        node: Node,
        command: list[str],
        image: str = "debian:bookworm-slim",
        labels: dict[str, str] | None = None,
        ports: list[int] | None = None,
        env: dict[str, str] | None = None,
        args_only: bool = False,
    ) -> None:
        """Creates a pod that must land on NODE (by its role label, as Spark pods do)."""
        container: dict[str, Any] = {
            "name": "main",
            "image": image,
            "imagePullPolicy": "Never",
            "args" if args_only else "command": command,
            "env": [
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                *({"name": key, "value": value} for key, value in (env or {}).items()),
            ],
        }
        if ports:
            container["ports"] = [{"containerPort": port} for port in ports]
        self.kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {ROLE_LABEL: node.role},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                },
            }
        )

    def pod(self, namespace: str, name: str) -> Any:
        return self.kubectl.get_json("get", "pod", name, f"--namespace={namespace}")

    def wait_phase(self, namespace: str, name: str, phases: set[str], timeout: float = 180) -> Any:
        """Waits until the pod's phase is one of PHASES (or it failed) and returns the pod."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.pod(namespace, name)
            phase = pod.get("status", {}).get("phase")
            if phase in phases or phase == "Failed":
                return pod
            waiting = {
                status.get("state", {}).get("waiting", {}).get("reason")
                for status in pod.get("status", {}).get("containerStatuses", [])
            }
            if time.monotonic() > deadline or waiting & STUCK:
                raise AssertionError(
                    f"pod {namespace}/{name} is {phase} ({waiting & STUCK or 'timed out'}):\n"
                    + json.dumps(pod.get("status"), indent=1)
                )
            time.sleep(0.5)

    def wait_ready(self, namespace: str, name: str, timeout: float = 180) -> Any:
        self.kubectl(
            "wait", "--for=condition=Ready", f"pod/{name}", f"--namespace={namespace}",
            f"--timeout={int(timeout)}s", timeout=timeout + 10,
        )  # fmt: skip
        return self.pod(namespace, name)

    def logs(self, namespace: str, name: str) -> str:
        return self.kubectl("logs", name, f"--namespace={namespace}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def started_cluster(timings: dict[str, float]) -> Iterator[E2ECluster]:
    """Records the host, starts the two-node cluster, and ALWAYS brings it down and restores
    the host on exit, also when `up` itself or the body failed (SIGTERM included); brings a
    previous run's cluster down first. Adds the phases of `up` to `timings`."""
    run = RunDir.default()
    if run.state_file.exists() or run.snapshot_file.exists():
        leftover = cluster.down(run)
        assert not leftover, f"a previous run's cluster could not be brought down: {leftover}"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    handle = E2ECluster(run, host.snapshot(), running_programs())
    try:
        phases = cluster.up(run).phases
        timings.update({f"up: {name}": seconds for name, seconds in phases.items()})
        timings["up: total"] = sum(phases.values())
        yield handle
    finally:
        problems = handle.down()
        signal.signal(signal.SIGTERM, previous)
        assert not problems, "the host was not restored:\n" + "\n".join(problems)


def ca_bundle_for_builds() -> Path | None:
    """The CA bundle the image build's download stages should trust besides Debian's:
    $CARSTREAM_BUILD_CA_FILE, else this host's system bundle (which holds the CA of the
    TLS-intercepting gateway in front of the registries, where there is one)."""
    configured = os.environ.get("CARSTREAM_BUILD_CA_FILE")
    path = Path(configured or "/etc/ssl/certs/ca-certificates.crt")
    return path if path.is_file() else None
