"""The two nodes: a kubelet each (on its own containerd, CNI bridge, pod subnet and cgroup
root), their addresses on lo, and one kube-proxy for both (they share the host's network)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from carstream import toolchain
from localcluster import configs
from localcluster.control_plane import wait_ready
from localcluster.host import cgroup_hierarchies
from localcluster.kubectl import Kubectl
from localcluster.layout import (
    CLUSTER_CIDR,
    CLUSTER_DOMAIN,
    DNS_IP,
    NODES,
    SERVICE_CIDR,
    Node,
    RunDir,
)
from localcluster.processes import ClusterError, State, start

EGRESS_CHAIN = "CARSTREAM-E2E-EGRESS"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def add_node_address(node: Node) -> None:
    """The node's IP as a /32 alias on lo: reachable from this host and its pods only."""
    shown = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    ).stdout
    if f" {node.ip}/32 " not in shown:
        _ip("addr", "add", f"{node.ip}/32", "dev", "lo")


def _iptables(*args: str) -> None:
    result = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"iptables {' '.join(args)} failed: {result.stderr.strip()}")


def keep_pod_traffic_on_this_host() -> None:
    """Drops what a pod sends anywhere but to a pod, a Service or an address of this host,
    before routing (mangle PREROUTING), whatever the CNI firewall plugin later accepts."""
    _iptables("-t", "mangle", "-N", EGRESS_CHAIN)
    for destination in (CLUSTER_CIDR, SERVICE_CIDR):
        _iptables("-t", "mangle", "-A", EGRESS_CHAIN, "-d", destination, "-j", "RETURN")
    _iptables(
        "-t", "mangle", "-A", EGRESS_CHAIN, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN"
    )
    _iptables("-t", "mangle", "-A", EGRESS_CHAIN, "-j", "DROP")
    _iptables("-t", "mangle", "-A", "PREROUTING", "-s", CLUSTER_CIDR, "-j", EGRESS_CHAIN)


def prepare_cgroup_root(node: Node) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a new cpuset cgroup has no CPUs
    and no memory nodes until they are copied from its parent."""
    for hierarchy in cgroup_hierarchies():
        directory = hierarchy / node.cgroup_root.lstrip("/")
        directory.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for name in ("cpuset.cpus", "cpuset.mems"):
                (directory / name).write_text((hierarchy / name).read_text())


def write_cni_config(run: RunDir, node: Node) -> Path:
    return configs.write(
        run.cni_conf_dir(node) / "10-carstream.conflist",
        "cni.conflist",
        network=node.name,
        bridge=node.bridge,
        pod_cidr=node.pod_cidr,
        pod_gateway=node.pod_gateway,
        node_dir=run.node_dir(node),
    )


def start_kubelet(run: RunDir, node: Node, state: State) -> None:
    node_dir = run.node_dir(node)
    config = configs.write(
        node_dir / "kubelet.yaml",
        "kubelet.yaml",
        cgroup_root=node.cgroup_root,
        containerd_socket=run.containerd_socket(node),
        node_ip=node.ip,
        ca_file=run.pki / "ca.crt",
        cluster_domain=CLUSTER_DOMAIN,
        dns_ip=DNS_IP,
        node_dir=node_dir,
    )
    (node_dir / "manifests").mkdir(parents=True, exist_ok=True)
    labels = ",".join(f"{key}={value}" for key, value in node.labels.items())
    start(
        f"kubelet-{node.name}",
        [
            str(toolchain.binary("kubelet")),
            f"--config={config}",
            f"--kubeconfig={run.kubeconfig(node.name)}",
            f"--root-dir={run.kubelet_root(node)}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.ip}",
            f"--node-labels={labels}",
            "--v=1",
        ],
        run.logs / f"kubelet-{node.name}.log",
        state,
        run.state_file,
    )


def start_kube_proxy(run: RunDir, state: State) -> None:
    config = configs.write(
        run.configs / "kube-proxy.yaml",
        "kube-proxy.yaml",
        kubeconfig=run.kubeconfig("kube-proxy"),
        node_name=NODES[0].name,
        cluster_cidr=CLUSTER_CIDR,
        node_ip=NODES[0].ip,
    )
    start(
        "kube-proxy",
        [str(toolchain.binary("kube-proxy")), f"--config={config}"],
        run.logs / "kube-proxy.log",
        state,
        run.state_file,
    )


def wait_nodes_ready(run: RunDir, state: State) -> None:
    kubectl = Kubectl(run)
    condition = "jsonpath={.status.conditions[?(@.type=='Ready')].status}=True"
    for node in NODES:
        record = state.record(f"kubelet-{node.name}")
        assert record is not None
        wait_ready(
            record,
            f"node {node.name}",
            functools.partial(
                kubectl.ok, "wait", f"--for={condition}", f"node/{node.name}", "--timeout=2s"
            ),
        )
