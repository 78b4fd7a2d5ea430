"""Pods, DNS and the pod network of the real two-node cluster."""

from __future__ import annotations

import secrets

import pytest

from localcluster.layout import CLUSTER_DOMAIN, NODES, Node
from tests.e2e.harness import E2ECluster

WEB_PORT = 8080


@pytest.fixture(scope="module")
def namespace(cluster: E2ECluster) -> str:
    return cluster.namespace("pods")


@pytest.fixture(scope="module")
def web(cluster: E2ECluster, namespace: str) -> dict[str, str]:
    """An HTTP server pod on node 1 (perl from Debian's essential perl-base) that answers with
    a random token, and a Service `web` in front of it."""
    token = secrets.token_hex(8)
    script = (
        "use IO::Socket::INET; $|=1;"
        f"my $s = IO::Socket::INET->new(LocalPort => {WEB_PORT}, Listen => 8, ReuseAddr => 1)"
        " or die $!; print qq(listening\\n);"
        "while (my $c = $s->accept) { <$c>;"
        " print $c qq(HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n$ENV{TOKEN}\\n);"
        " close $c }"
    )
    cluster.run_pod(
        namespace,
        "web",
        NODES[0],
        ["perl", "-e", script],
        labels={"app": "web"},
        ports=[WEB_PORT],
        env={"TOKEN": token},
    )
    cluster.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": WEB_PORT}]},
        }
    )
    pod = cluster.wait_ready(namespace, "web")
    assert pod["spec"]["nodeName"] == NODES[0].name
    service = cluster.kubectl.get_json("get", "service", "web", f"--namespace={namespace}")
    return {
        "token": token,
        "pod_ip": pod["status"]["podIP"],
        "service_ip": service["spec"]["clusterIP"],
    }


def run_to_completion(
    cluster: E2ECluster, namespace: str, name: str, node: Node, script: str
) -> str:
    """Runs SCRIPT with bash in a pod on NODE; returns its output once it succeeded."""
    cluster.run_pod(namespace, name, node, ["bash", "-c", script])
    pod = cluster.wait_phase(namespace, name, {"Succeeded"})
    output = cluster.logs(namespace, name)
    assert pod["status"]["phase"] == "Succeeded", output
    assert pod["spec"]["nodeName"] == node.name
    return output


@pytest.mark.parametrize("node", NODES, ids=[node.name for node in NODES])
def test_a_pod_runs_to_succeeded_on_each_node(
    cluster: E2ECluster, namespace: str, node: Node
) -> None:
    output = run_to_completion(
        cluster, namespace, f"hello-{node.index}", node,
        'echo "ran on $NODE_NAME"; cat /etc/debian_version',
    )  # fmt: skip
    ran_on, version = output.splitlines()
    assert ran_on == f"ran on {node.name}"
    assert version.startswith("12.")


def test_dns_resolves_a_service_name_from_a_pod(
    cluster: E2ECluster, namespace: str, web: dict[str, str]
) -> None:
    output = run_to_completion(
        cluster, namespace, "dns", NODES[1],
        f"getent hosts web.{namespace}.svc.{CLUSTER_DOMAIN} web kubernetes.default",
    )  # fmt: skip
    kubernetes_ip = cluster.kubectl.get_json("get", "service", "kubernetes")["spec"]["clusterIP"]
    assert [line.split() for line in output.splitlines()] == [
        [web["service_ip"], f"web.{namespace}.svc.{CLUSTER_DOMAIN}"],
        [web["service_ip"], f"web.{namespace}.svc.{CLUSTER_DOMAIN}"],
        [kubernetes_ip, f"kubernetes.default.svc.{CLUSTER_DOMAIN}"],
    ]


def test_a_pod_on_node_2_reaches_a_pod_on_node_1_by_pod_ip_and_by_service(
    cluster: E2ECluster, namespace: str, web: dict[str, str]
) -> None:
    fetch = (
        'fetch() { exec 3<>"/dev/tcp/$1/$2" || exit 1; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3;'
        " tail -n 1 <&3; exec 3>&-; };"
    )
    output = run_to_completion(
        cluster, namespace, "client", NODES[1],
        fetch + f" fetch {web['pod_ip']} {WEB_PORT}; fetch {web['service_ip']} 80; fetch web 80",
    )  # fmt: skip
    assert output.splitlines() == [web["token"]] * 3
