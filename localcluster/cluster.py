"""`up`, `down` and `status` of the whole cluster, in the order its parts need.

`up` records the host state first, then every process it starts (state.json), so `down`
works from the run directory alone: after a finished `up`, after one that failed halfway, and
after the process that ran it was killed. `down` drains the pods while the kubelets still run,
stops each recorded process in the reverse order of its start (kube-proxy and kubelets before
the control plane, each containerd after its pods, the API server before etcd, dockerd last),
kills whatever still runs in the cluster's cgroups, and restores the host.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from carstream import toolchain
from localcluster import control_plane, host, images, nodes, pki, runtime
from localcluster.kubectl import Kubectl
from localcluster.layout import (
    BASE_IMAGE,
    DOCKER_BRIDGE,
    DOCKER_CGROUP_PARENT,
    NODES,
    PAUSE_IMAGE,
    RunDir,
)
from localcluster.processes import (
    ClusterError,
    State,
    is_running,
    kill_pids,
    processes_mentioning,
    stop,
    wait_for,
)

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "coredns",
    "pause",
)
PROGRAMS = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")


@dataclass
class Timings:
    """Seconds each phase of `up` took."""

    phases: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        action()
        self.phases[name] = time.monotonic() - started

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.phases.items())


# What a cluster and tests/e2e write at most to the run directory and dockerd's data root:
# image builds, and each image unpacked in both nodes' containerd. Below it, a node crosses the
# kubelet's disk-pressure threshold mid-run and no new pod starts: better refused up front.
MIN_FREE_BYTES = 25 * 1024**3


def check_prerequisites(run: RunDir) -> None:
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (network, mounts, cgroups)")
    runtime.require_programs([*PROGRAMS, runtime.DOCKER_CLI])
    for name in BINARIES:
        toolchain.binary(name)
    toolchain.base_image_tar()
    for folder in (run.root, toolchain.docker_data_root()):
        check_free_space(folder, MIN_FREE_BYTES)


def check_free_space(folder: Path, needed: int) -> None:
    """ClusterError unless the file system FOLDER is (or will be) on has NEEDED bytes free."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ClusterError(
            f"{existing} has {free / 1024**3:.1f} GiB free; the cluster needs "
            f"{needed / 1024**3:.0f} GiB (images, both nodes' containerd): free some space first"
        )


def up(run: RunDir, log: Callable[[str], None] = print) -> Timings:
    """Starts the cluster; on any failure or interruption, brings everything down again."""
    check_prerequisites(run)
    if run.state_file.exists() or run.snapshot_file.exists():
        raise ClusterError(
            f"a cluster is already recorded in {run.root} (running, or left by a crash): "
            "run 'python -m localcluster down' first"
        )
    run.root.mkdir(parents=True, exist_ok=True)
    host.snapshot().save(run.snapshot_file)
    state = State()
    state.save(run.state_file)
    timings = Timings()
    try:
        _start_everything(run, state, timings, log)
    except BaseException:
        log("up failed: bringing down what was started and restoring the host")
        for problem in down(run, log):
            log(f"  {problem}")
        raise
    state.phase = "up"
    state.save(run.state_file)
    return timings


def _start_everything(
    run: RunDir, state: State, timings: Timings, log: Callable[[str], None]
) -> None:
    timings.measure("pki", lambda: pki.make_pki(run))
    for node in NODES:
        nodes.add_node_address(node)
    nodes.keep_pod_traffic_on_this_host()
    log("starting dockerd")
    timings.measure("dockerd", lambda: runtime.start_dockerd(run, state))
    timings.measure("base and pause images", lambda: _base_images(run))
    log("starting containerd for each node")

    def runtimes() -> None:
        for node in NODES:
            nodes.prepare_cgroup_root(node)
            nodes.write_cni_config(run, node)
            runtime.start_containerd(run, node, state)
        images.load_image(run, PAUSE_IMAGE, BASE_IMAGE)

    timings.measure("containerd", runtimes)
    log("starting etcd, kube-apiserver, controllers, CoreDNS")

    def control() -> None:
        control_plane.start_etcd(run, state)
        control_plane.start_apiserver(run, state)
        control_plane.start_controllers(run, state)
        control_plane.start_coredns(run, state)

    timings.measure("control plane", control)
    log("starting the kubelets and kube-proxy")

    def workers() -> None:
        for node in NODES:
            nodes.start_kubelet(run, node, state)
        nodes.start_kube_proxy(run, state)
        nodes.wait_nodes_ready(run, state)
        _wait_default_service_account(run)

    timings.measure("nodes ready", workers)


def _base_images(run: RunDir) -> None:
    images.import_base_image(run)
    images.build_pause_image(run)


def _wait_default_service_account(run: RunDir) -> None:
    kubectl = Kubectl(run)
    if not wait_for(lambda: kubectl.ok("get", "serviceaccount", "default"), 60, 0.5):
        raise ClusterError("the controller manager made no default ServiceAccount in 60 s")


def down(run: RunDir, log: Callable[[str], None] = print) -> list[str]:
    """Stops everything recorded in RUN and restores the host; returns what could not be
    restored (empty when the host is as it was before `up`)."""
    state = State.load(run.state_file)
    if state is None and not run.snapshot_file.exists():
        return []
    if state is not None:
        state.phase = "stopping"
        state.save(run.state_file)
        _drain(run, state, log)
        for record in reversed(state.processes):
            if record.name.startswith("containerd-"):
                node = next(n for n in NODES if record.name == f"containerd-{n.name}")
                if is_running(record):
                    runtime.stop_containers(run, node)
            if stop(record):
                log(f"stopped {record.name} (pid {record.pid})")
    _kill_leftovers(run, log)
    problems: list[str] = []
    if run.snapshot_file.exists():
        before = host.HostState.load(run.snapshot_file)
        problems = host.restore(before, _ownership(run))
    if not problems:
        _remove_run_state(run)
    return problems


def _drain(run: RunDir, state: State, log: Callable[[str], None]) -> None:
    """Deletes every pod while the API server and kubelets run, so each kubelet tears its
    sandboxes and their CNI networks down itself."""
    needed = ["kube-apiserver", *(f"kubelet-{node.name}" for node in NODES)]
    records = [state.record(name) for name in needed]
    if not all(record is not None and is_running(record) for record in records):
        return
    log("deleting all pods")
    kubectl = Kubectl(run)
    kubectl.run(
        "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=true",
        "--timeout=120s", timeout=150, check=False,
    )  # fmt: skip


def _cgroup_dirs() -> list[str]:
    """The cgroups under which the kubelets and dockerd put every container they start."""
    return [node.cgroup_root for node in NODES] + [DOCKER_CGROUP_PARENT]


# Programs that a crash may leave running, found by the run directory in their command line:
# dockerd's own containerd, the shims of all containerds, and a `docker save` or `ctr images
# import` of an image load that was under way.
RUNTIME_PROGRAMS = ("containerd", "containerd-shim", "containerd-shim-runc-v2", "ctr", "docker")


def _kill_leftovers(run: RunDir, log: Callable[[str], None]) -> None:
    """What a crash leaves running: containers (found by the cluster's cgroups) and the
    runtime's helpers (RUNTIME_PROGRAMS)."""
    pids: set[int] = set()
    for hierarchy in host.cgroup_hierarchies():
        for cgroup in _cgroup_dirs():
            top = hierarchy / cgroup.lstrip("/")
            for procs in top.rglob("cgroup.procs") if top.is_dir() else []:
                pids.update(int(pid) for pid in procs.read_text().split())
    pids.update(processes_mentioning(str(run.root), RUNTIME_PROGRAMS))
    pids.discard(os.getpid())
    if pids:
        log(f"killing {len(pids)} leftover processes of the cluster: {sorted(pids)}")
        kill_pids(sorted(pids))


def _ownership(run: RunDir) -> host.Ownership:
    return host.Ownership(
        paths=(str(run.root), str(toolchain.docker_data_root())),
        links=(*(node.bridge for node in NODES), DOCKER_BRIDGE),
        cgroups=tuple(cgroup.lstrip("/") for cgroup in _cgroup_dirs()),
        networks=tuple(node.name for node in NODES),
    )


def _remove_run_state(run: RunDir) -> None:
    """Everything but logs/ goes: the next `up` starts from nothing. Never while something is
    still mounted below the run directory: rm -r would reach into the mounted file system."""
    prefix = str(run.root).rstrip("/") + "/"
    if any(mountpoint.startswith(prefix) for mountpoint in host.read_mounts()):
        raise ClusterError(f"mounts remain under {run.root}: not removing it")
    for child in run.root.iterdir() if run.root.is_dir() else []:
        if child == run.logs:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def status(run: RunDir) -> list[str]:
    state = State.load(run.state_file)
    if state is None:
        return [f"no cluster recorded in {run.root}"]
    lines = [f"cluster in {run.root}: {state.phase}"]
    for record in state.processes:
        word = "running" if is_running(record) else "not running"
        lines.append(f"  {record.name:<40} pid {record.pid:<8} {word}")
    apiserver = state.record("kube-apiserver")
    if apiserver is not None and is_running(apiserver):
        result = Kubectl(run).run("get", "nodes", "--output=wide", check=False)
        lines += result.stdout.splitlines() or result.stderr.splitlines()
    return lines
