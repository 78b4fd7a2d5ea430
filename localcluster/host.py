"""The host state that running the cluster changes: recorded before `up`, restored by `down`.

What the cluster's programs change on this machine, found by running them here:
- sysctls: the kubelet sets vm.overcommit_memory, vm.panic_on_oom, kernel.panic,
  kernel.panic_on_oops and kernel.keys.* at start (no opt-out); dockerd and the CNI bridge
  plugin turn on IP forwarding;
- iptables (IPv4 and IPv6): dockerd's DOCKER* chains and FORWARD policy DROP, the kubelet's
  KUBE-FIREWALL/KUBE-KUBELET-CANARY, kube-proxy's KUBE-* chains, the CNI firewall and bridge
  plugins' CNI-* chains;
- links: docker0, one CNI bridge per node, the pods' veths; addresses: the node IPs on lo;
- mounts: the kubelet's root dirs, containerd's overlay snapshots, the pods' network
  namespaces in /run/netns; cgroups: one root per node and docker's;
- files: the CNI result cache (/var/lib/cni), /var/log/containers, /run/containerd (shim
  sockets), /run/docker.

`restore()` puts every item back as recorded, removing only what `Ownership` says is the
cluster's, and `differences()` says what still differs (also what others changed meanwhile).
An iptables table with no rules, no chains of its own and only ACCEPT policies counts as
absent: iptables-nft can empty a table but not remove it, and an empty table filters nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)

# (save command, restore command): the nf_tables and the legacy back ends, IPv4 and IPv6.
IPTABLES = {
    "iptables": ("iptables-save", "iptables"),
    "ip6tables": ("ip6tables-save", "ip6tables"),
    "iptables-legacy": ("iptables-legacy-save", "iptables-legacy"),
    "ip6tables-legacy": ("ip6tables-legacy-save", "ip6tables-legacy"),
}

# Folders outside the run directory that containerd, the kubelet, CNI and dockerd write to.
TRACKED_DIRS = (
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/run/netns",
    "/run/containerd",
    "/run/docker",
    "/run/docker.sock",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/etc/cni",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Ownership:
    """What of the host's new state is the cluster's, so that restore() removes only that and
    leaves alone what other programs (another container runtime, say) created meanwhile:
    mounts and files under PATHS (the run directory, dockerd's data root), the links in
    LINKS and the veths attached to them, the top-level cgroups in CGROUPS, the CNI cache
    entries of the NETWORKS, the pods' network namespaces (/run/netns/cni-*) and log links
    into PATHS. A tracked folder that did not exist before goes as a whole."""

    paths: tuple[str, ...]
    links: tuple[str, ...]
    cgroups: tuple[str, ...]
    networks: tuple[str, ...]

    def owns_path(self, path: str) -> bool:
        return any(path == own or path.startswith(own.rstrip("/") + "/") for own in self.paths)


@dataclass
class HostState:
    sysctls: dict[str, str | None] = field(default_factory=dict)
    iptables: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    lo_addresses: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    cgroups: dict[str, list[str]] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))


def _run(*command: str, check: bool = True) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


# --- reading ------------------------------------------------------------------------------


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls() -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for key in SYSCTLS:
        try:
            values[key] = " ".join(_sysctl_path(key).read_text().split())
        except OSError:
            values[key] = None
    return values


def normalize_iptables(saved: str) -> dict[str, list[str]]:
    """iptables-save output as {table: [chain declarations and rules]}, without comments and
    counters; empty tables (see the module's docstring) are left out."""
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in saved.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif current is not None:
            if line.startswith(":"):
                line = " ".join(line.split()[:2])
            current.append(line)
    return {
        table: lines
        for table, lines in tables.items()
        if any(not (line.startswith(":") and line.endswith(" ACCEPT")) for line in lines)
    }


def read_iptables() -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = {}
    for family, (save, _) in IPTABLES.items():
        if shutil.which(save) is None:
            continue
        result = subprocess.run([save], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            found[family] = normalize_iptables(result.stdout)
    return found


def read_lo_addresses() -> list[str]:
    output = _run("ip", "-o", "addr", "show", "dev", "lo")
    return sorted(line.split()[3] for line in output.splitlines() if len(line.split()) > 3)


def read_links() -> list[str]:
    output = _run("ip", "-o", "link", "show")
    return sorted(line.split(":")[1].strip().split("@")[0] for line in output.splitlines())


def read_routes() -> list[str]:
    lines = (
        _run("ip", "-4", "route", "show").splitlines()
        + _run("ip", "-6", "route", "show").splitlines()
    )
    return sorted(" ".join(line.split()) for line in lines)


def read_mounts() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sorted({line.split()[4] for line in lines})


def cgroup_hierarchies() -> list[Path]:
    return sorted(path for path in CGROUP_ROOT.iterdir() if path.is_dir())


def read_cgroups() -> dict[str, list[str]]:
    return {
        hierarchy.name: sorted(child.name for child in hierarchy.iterdir() if child.is_dir())
        for hierarchy in cgroup_hierarchies()
    }


def read_paths() -> list[str]:
    found: list[str] = []
    for top in map(Path, TRACKED_DIRS):
        if not top.exists() and not top.is_symlink():
            continue
        found.append(str(top))
        if top.is_dir() and not top.is_symlink():
            for directory, dirnames, filenames in os.walk(top):
                found.extend(os.path.join(directory, name) for name in dirnames + filenames)
    return sorted(found)


def snapshot() -> HostState:
    return HostState(
        sysctls=read_sysctls(),
        iptables=read_iptables(),
        lo_addresses=read_lo_addresses(),
        links=read_links(),
        routes=read_routes(),
        mounts=read_mounts(),
        cgroups=read_cgroups(),
        paths=read_paths(),
    )


# --- comparing ----------------------------------------------------------------------------


def differences(before: HostState, after: HostState) -> list[str]:
    """What differs, one line per item, empty when the host is as recorded."""
    found: list[str] = []
    for key, value in before.sysctls.items():
        if after.sysctls.get(key) != value:
            found.append(f"sysctl {key}: {after.sysctls.get(key)} (was {value})")
    for family in sorted(set(before.iptables) | set(after.iptables)):
        old, new = before.iptables.get(family, {}), after.iptables.get(family, {})
        for table in sorted(set(old) | set(new)):
            for line in sorted(set(new.get(table, [])) - set(old.get(table, []))):
                found.append(f"{family} -t {table}: added {line}")
            for line in sorted(set(old.get(table, [])) - set(new.get(table, []))):
                found.append(f"{family} -t {table}: missing {line}")
            if set(old.get(table, [])) == set(new.get(table, [])) and old.get(table) != new.get(
                table
            ):
                found.append(f"{family} -t {table}: rules in another order")
    found += _set_changes("address on lo", before.lo_addresses, after.lo_addresses)
    found += _set_changes("link", before.links, after.links)
    found += _set_changes("route", before.routes, after.routes)
    found += _set_changes("mount", before.mounts, after.mounts)
    for hierarchy in sorted(set(before.cgroups) | set(after.cgroups)):
        found += _set_changes(
            f"cgroup {hierarchy}/",
            before.cgroups.get(hierarchy, []),
            after.cgroups.get(hierarchy, []),
        )
    found += _set_changes("path", before.paths, after.paths)
    return found


def _set_changes(what: str, before: Iterable[str], after: Iterable[str]) -> list[str]:
    old, new = set(before), set(after)
    return [f"{what} added: {item}" for item in sorted(new - old)] + [
        f"{what} gone: {item}" for item in sorted(old - new)
    ]


# --- restoring ----------------------------------------------------------------------------


def restore(before: HostState, ours: Ownership) -> list[str]:
    """Undoes what the cluster changed, in an order that lets each step succeed (mounts
    before the folders under them, veths before bridges), then returns `differences()`."""
    problems: list[str] = []
    _unmount_new(before, ours, problems)
    _delete_new_links(before, ours, problems)
    _delete_new_lo_addresses(before, problems)
    _remove_new_cgroups(before, ours, problems)
    _remove_new_paths(before, ours, problems)
    _restore_iptables(before, problems)
    _restore_sysctls(before, problems)
    return problems + differences(before, snapshot())


def _tracked_top(path: str) -> str | None:
    return next((top for top in TRACKED_DIRS if path == top or path.startswith(top + "/")), None)


def _is_pod_netns(path: str) -> bool:
    return path.startswith("/run/netns/cni-")


def _unmount_new(before: HostState, ours: Ownership, problems: list[str]) -> None:
    old = set(before.mounts)
    new_tops = {top for top in TRACKED_DIRS if top not in before.paths}
    new = [
        mountpoint
        for mountpoint in set(read_mounts()) - old
        if ours.owns_path(mountpoint)
        or _is_pod_netns(mountpoint)
        or _tracked_top(mountpoint) in new_tops
    ]
    for mountpoint in sorted(new, key=lambda m: -m.count("/")):
        result = subprocess.run(["umount", mountpoint], capture_output=True, text=True)
        if result.returncode != 0:
            lazy = subprocess.run(["umount", "-l", mountpoint], capture_output=True, text=True)
            if lazy.returncode != 0 and mountpoint in read_mounts():
                problems.append(f"could not unmount {mountpoint}: {lazy.stderr.strip()}")


def read_link_masters() -> dict[str, str | None]:
    """Link name -> the bridge it is attached to (None when it is not)."""
    masters: dict[str, str | None] = {}
    for line in _run("ip", "-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        words = line.split()
        masters[name] = words[words.index("master") + 1] if "master" in words else None
    return masters


def _delete_new_links(before: HostState, ours: Ownership, problems: list[str]) -> None:
    masters = read_link_masters()
    bridges = [name for name in ours.links if name in masters and name not in before.links]
    veths = [
        name for name, master in masters.items() if master in bridges and name not in before.links
    ]
    # veths first: deleting one end removes its peer in the pod's namespace too
    for name in [*veths, *bridges]:
        if name not in read_links():
            continue
        result = subprocess.run(["ip", "link", "delete", name], capture_output=True, text=True)
        if result.returncode != 0 and name in read_links():
            problems.append(f"could not delete link {name}: {result.stderr.strip()}")


def _delete_new_lo_addresses(before: HostState, problems: list[str]) -> None:
    for address in sorted(set(read_lo_addresses()) - set(before.lo_addresses)):
        result = subprocess.run(
            ["ip", "addr", "delete", address, "dev", "lo"], capture_output=True, text=True
        )
        if result.returncode != 0:
            problems.append(f"could not delete {address} from lo: {result.stderr.strip()}")


def _remove_new_cgroups(before: HostState, ours: Ownership, problems: list[str]) -> None:
    for hierarchy in cgroup_hierarchies():
        old = set(before.cgroups.get(hierarchy.name, []))
        for child in sorted(hierarchy.iterdir()):
            if child.is_dir() and child.name not in old and child.name in ours.cgroups:
                remove_cgroup_tree(child, problems)


def remove_cgroup_tree(top: Path, problems: list[str]) -> None:
    """rmdir, deepest first: a cgroup folder cannot be removed with rm -r."""
    for directory, _, _ in sorted(os.walk(top), key=lambda item: -item[0].count("/")):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError as error:
            problems.append(f"could not remove cgroup {directory}: {error}")


def _is_ours(path: str, before: HostState, ours: Ownership) -> bool:
    top = _tracked_top(path)
    if top is None:
        return False
    if top not in before.paths:
        return True
    if top == "/var/lib/cni":  # the CNI result cache: results/<network>-<container>-<interface>
        return any(f"/{network}-" in path for network in ours.networks)
    if top == "/run/netns":
        return _is_pod_netns(path)
    if top == "/var/log/containers":  # the kubelet's links to the pods' logs
        return os.path.islink(path) and ours.owns_path(os.readlink(path))
    return False


def _remove_new_paths(before: HostState, ours: Ownership, problems: list[str]) -> None:
    old = set(before.paths)
    new = [path for path in set(read_paths()) - old if _is_ours(path, before, ours)]
    for path in sorted(new, key=lambda p: -p.count("/")):
        target = Path(path)
        try:
            if target.is_symlink() or not target.is_dir():
                target.unlink(missing_ok=True)
            else:
                shutil.rmtree(target)
        except OSError as error:
            problems.append(f"could not remove {path}: {error}")


def _restore_iptables(before: HostState, problems: list[str]) -> None:
    now = read_iptables()
    for family, tables in now.items():
        command = IPTABLES[family][1]
        wanted = before.iptables.get(family, {})
        for table in sorted(set(tables) | set(wanted)):
            if tables.get(table) == wanted.get(table):
                continue
            try:
                _reset_table(command, table, tables.get(table, []), wanted.get(table, []))
            except RuntimeError as error:
                problems.append(f"{family} -t {table}: {error}")


def _reset_table(command: str, table: str, current: list[str], wanted: list[str]) -> None:
    """Flushes TABLE, deletes its own chains, sets the policies, then adds WANTED back."""
    _run(command, "-w", "-t", table, "-F")
    _run(command, "-w", "-t", table, "-X")
    policies = dict(line[1:].split(" ", 1) for line in wanted if line.startswith(":"))
    for line in current:
        if line.startswith(":"):
            chain, policy = line[1:].split(" ", 1)
            if policy != "-":
                _run(command, "-w", "-t", table, "-P", chain, policies.get(chain, "ACCEPT"))
    rest = [line for line in wanted if not (line.startswith(":") and not line.endswith(" -"))]
    if rest:
        script = "\n".join([f"*{table}", *rest, "COMMIT", ""])
        result = subprocess.run(
            [f"{command}-restore", "-w", "--noflush"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command}-restore failed: {result.stderr.strip()}")


def _restore_sysctls(before: HostState, problems: list[str]) -> None:
    current = read_sysctls()
    # ip_forward first: writing it also resets the per-interface forwarding switches
    for key in sorted(before.sysctls, key=lambda k: k != "net.ipv4.ip_forward"):
        value = before.sysctls[key]
        if value is None or current.get(key) == value:
            continue
        with contextlib.suppress(OSError):
            _sysctl_path(key).write_text(value)
        if read_sysctls().get(key) != value:
            problems.append(f"could not set {key} back to {value}")
