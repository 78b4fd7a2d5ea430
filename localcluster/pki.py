"""The cluster's certificates and kubeconfigs, made with the openssl command.

One self-signed CA signs everything: the API server's serving certificate, a client
certificate per identity (admin in system:masters, each kubelet as system:node:NAME, the
controller manager, the scheduler, kube-proxy, the API server's kubelet client), and the
service-account signing key pair. Keys are RSA 2048: the Kubernetes client inside Spark
(fabric8) cannot read an ECDSA key in PKCS#8 form.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from localcluster.layout import (
    APISERVER_PORT,
    CLUSTER_NAME,
    CONTROL_PLANE_IP,
    KUBERNETES_SERVICE_IP,
    NODES,
    RunDir,
)

DAYS = "30"


@dataclass(frozen=True)
class Identity:
    """A client certificate's file stem, common name (user) and organisation (group)."""

    stem: str
    user: str
    group: str | None = None


def identities() -> list[Identity]:
    found = [
        Identity("admin", "carstream-admin", "system:masters"),
        Identity("kube-controller-manager", "system:kube-controller-manager"),
        Identity("kube-scheduler", "system:kube-scheduler"),
        Identity("kube-proxy", "system:kube-proxy"),
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
    ]
    found += [Identity(node.name, f"system:node:{node.name}", "system:nodes") for node in NODES]
    return found


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f"{path}")
    path.chmod(0o600)


def _subject(identity: Identity) -> str:
    return (f"/O={identity.group}" if identity.group else "") + f"/CN={identity.user}"


def _sign(pki: Path, stem: str, subject: str, extensions: list[str]) -> None:
    key, csr, cert, ext = (pki / f"{stem}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text("\n".join(["basicConstraints=CA:FALSE", *extensions, ""]))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey",
        str(pki / "ca.key"), "-CAcreateserial", "-days", DAYS, "-extfile", str(ext),
        "-out", str(cert),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()


def apiserver_names() -> list[str]:
    dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    dns.append("localhost")
    ips = ["127.0.0.1", CONTROL_PLANE_IP, KUBERNETES_SERVICE_IP]
    return [f"DNS:{name}" for name in dns] + [f"IP:{ip}" for ip in ips]


def make_pki(run: RunDir) -> None:
    """CA, certificates, the service-account key pair and a kubeconfig per identity."""
    pki = run.pki
    pki.mkdir(parents=True, exist_ok=True)
    _new_key(pki / "ca.key")
    _openssl(
        "req", "-x509", "-new", "-key", str(pki / "ca.key"), "-subj", f"/CN={CLUSTER_NAME}-ca",
        "-days", DAYS, "-out", str(pki / "ca.crt"),
    )  # fmt: skip
    _sign(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        [
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(apiserver_names()),
        ],
    )
    client = ["keyUsage=critical,digitalSignature,keyEncipherment", "extendedKeyUsage=clientAuth"]
    for identity in identities():
        _sign(pki, identity.stem, _subject(identity), client)
        write_kubeconfig(run, identity)
    _new_key(pki / "service-account.key")
    _openssl(
        "pkey", "-in", str(pki / "service-account.key"), "-pubout",
        "-out", str(pki / "service-account.pub"),
    )  # fmt: skip


def server_url() -> str:
    return f"https://{CONTROL_PLANE_IP}:{APISERVER_PORT}"


def write_kubeconfig(run: RunDir, identity: Identity) -> Path:
    path = run.kubeconfig(identity.stem)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server_url(),
                    "certificate-authority": str(run.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": identity.user,
                "user": {
                    "client-certificate": str(run.pki / f"{identity.stem}.crt"),
                    "client-key": str(run.pki / f"{identity.stem}.key"),
                },
            }
        ],
        "contexts": [
            {"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": identity.user}}
        ],
        "current-context": CLUSTER_NAME,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
