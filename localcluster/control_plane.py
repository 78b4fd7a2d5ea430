"""etcd, kube-apiserver, kube-controller-manager, kube-scheduler and CoreDNS as host
processes, built by the toolchain bootstrap."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

from carstream import toolchain
from localcluster import configs
from localcluster.kubectl import Kubectl
from localcluster.layout import (
    APISERVER_PORT,
    CLUSTER_CIDR,
    CLUSTER_DOMAIN,
    CLUSTER_NAME,
    CONTROL_PLANE_IP,
    DNS_IP,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    SERVICE_CIDR,
    RunDir,
)
from localcluster.processes import (
    ClusterError,
    ProcessRecord,
    State,
    is_running,
    start,
    tail,
    wait_for,
)

READY_SECONDS = 120


def _start(run: RunDir, state: State, name: str, args: list[str]) -> ProcessRecord:
    command = [str(toolchain.binary(name)), *args]
    return start(name, command, run.logs / f"{name}.log", state, run.state_file)


def wait_ready(record: ProcessRecord, what: str, probe: Callable[[], bool]) -> None:
    """Waits until PROBE is true; fails at once when the process has exited."""

    def ready() -> bool:
        if not is_running(record):
            raise ClusterError(f"{record.name} exited\n{tail(record.log)}")
        return probe()

    if not wait_for(ready, READY_SECONDS, interval=0.5):
        raise ClusterError(f"{what} not ready after {READY_SECONDS} s\n{tail(record.log)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_etcd(run: RunDir, state: State) -> None:
    client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    record = _start(
        run,
        state,
        "etcd",
        [
            f"--name={CLUSTER_NAME}",
            f"--data-dir={run.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={CLUSTER_NAME}={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    wait_ready(record, "etcd", lambda: _http_ok(f"{client}/health"))


def start_apiserver(run: RunDir, state: State) -> None:
    pki = run.pki
    record = _start(
        run,
        state,
        "kube-apiserver",
        [
            f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
            f"--bind-address={CONTROL_PLANE_IP}",
            f"--advertise-address={CONTROL_PLANE_IP}",
            f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # node names do not resolve here: logs and exec reach kubelets by node IP
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        ],
    )
    kubectl = Kubectl(run)
    wait_ready(record, "kube-apiserver", lambda: kubectl.ok("get", "--raw=/readyz"))


def start_controllers(run: RunDir, state: State) -> None:
    """kube-controller-manager and kube-scheduler (no leader election: one of each)."""
    pki = run.pki
    kcm = run.kubeconfig("kube-controller-manager")
    _start(
        run,
        state,
        "kube-controller-manager",
        [
            f"--kubeconfig={kcm}",
            f"--authentication-kubeconfig={kcm}",
            f"--authorization-kubeconfig={kcm}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cluster-cidr={CLUSTER_CIDR}",
        ],
    )
    scheduler = run.kubeconfig("kube-scheduler")
    _start(
        run,
        state,
        "kube-scheduler",
        [
            f"--kubeconfig={scheduler}",
            f"--authentication-kubeconfig={scheduler}",
            f"--authorization-kubeconfig={scheduler}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ],
    )


def start_coredns(run: RunDir, state: State) -> None:
    corefile = configs.write(
        run.configs / "Corefile",
        "Corefile",
        dns_ip=DNS_IP,
        cluster_domain=CLUSTER_DOMAIN,
        kubeconfig=run.admin_kubeconfig,
    )
    _start(run, state, "coredns", [f"-conf={corefile}"])
