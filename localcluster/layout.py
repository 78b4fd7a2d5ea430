"""Where the cluster keeps its runtime state, and the fixed shape of the cluster.

Runtime state (PKI, configs, etcd, containerd and kubelet roots, logs, the state file) lives
in the run directory, `$CARSTREAM_CLUSTER_DIR` (default /tmp/carstream-e2e). Built artifacts
(binaries, the base image, docker's images and build cache) live in the toolchain cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RUN_DIR = Path("/tmp/carstream-e2e")

CLUSTER_NAME = "carstream-e2e"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 16443
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
ROLE_LABEL = "carstream.io/spark-role"
PAUSE_IMAGE = "carstream.local/pause:1.0"
BASE_IMAGE = "debian:bookworm-slim"


@dataclass(frozen=True)
class Node:
    """One kubelet with its own containerd, CNI bridge, pod subnet and cgroup root."""

    name: str
    index: int
    ip: str
    pod_cidr: str
    pod_gateway: str
    bridge: str
    role: str

    @property
    def labels(self) -> dict[str, str]:
        return {ROLE_LABEL: self.role}

    @property
    def cgroup_root(self) -> str:
        """The cgroup (in every hierarchy) under which this kubelet puts its pods."""
        return f"/{self.name}"


NODES = (
    Node(
        name="carstream-node1",
        index=1,
        ip="10.200.0.1",
        pod_cidr="10.244.1.0/24",
        pod_gateway="10.244.1.1",
        bridge="carstream1",
        role="driver",
    ),
    Node(
        name="carstream-node2",
        index=2,
        ip="10.200.0.2",
        pod_cidr="10.244.2.0/24",
        pod_gateway="10.244.2.1",
        bridge="carstream2",
        role="executor",
    ),
)

# The control plane listens on node 1's address, as it would on a control-plane node.
CONTROL_PLANE_IP = NODES[0].ip
DNS_IP = CONTROL_PLANE_IP
DOCKER_CGROUP_PARENT = "/carstream-docker"
# dockerd's default bridge: this machine runs no other dockerd (a second one would share it).
DOCKER_BRIDGE = "docker0"


@dataclass(frozen=True)
class RunDir:
    """Paths inside the run directory."""

    root: Path

    @classmethod
    def default(cls) -> RunDir:
        configured = os.environ.get("CARSTREAM_CLUSTER_DIR")
        return cls(Path(configured) if configured else DEFAULT_RUN_DIR)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def snapshot_file(self) -> Path:
        return self.root / "host-snapshot.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def configs(self) -> Path:
        return self.root / "config"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def docker_socket(self) -> Path:
        return self.root / "docker" / "docker.sock"

    @property
    def docker_exec_root(self) -> Path:
        return self.root / "docker" / "exec"

    @property
    def docker_pidfile(self) -> Path:
        return self.root / "docker" / "docker.pid"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.pki / "admin.kubeconfig"

    def kubeconfig(self, identity: str) -> Path:
        return self.pki / f"{identity}.kubeconfig"

    def node_dir(self, node: Node) -> Path:
        return self.root / node.name

    def containerd_socket(self, node: Node) -> Path:
        return self.node_dir(node) / "containerd" / "containerd.sock"

    def kubelet_root(self, node: Node) -> Path:
        return self.node_dir(node) / "kubelet"

    def cni_conf_dir(self, node: Node) -> Path:
        return self.node_dir(node) / "cni" / "net.d"

    @property
    def scratch(self) -> Path:
        """Temporary files: the pause image's build context, an image archive being loaded."""
        return self.root / "scratch"
