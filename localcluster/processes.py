"""Host processes started by the cluster, recorded by PID so that any later run can stop them.

A record holds the PID and the process's start time (field 22 of /proc/PID/stat): a PID that
the kernel has since given to another program is never signalled. The records live in the
run directory's state file, rewritten atomically after every start and stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


class ClusterError(RuntimeError):
    """The cluster could not be started, or a step of it failed; the message says why."""


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int
    command: list[str]
    log: str


@dataclass
class State:
    """What `up` started, in order. `phase` is `starting`, `up` or `stopping`."""

    phase: str = "starting"
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            phase=raw["phase"], processes=[ProcessRecord(**item) for item in raw["processes"]]
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(asdict(self), indent=2))
        staging.replace(path)

    def record(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_running(record: ProcessRecord) -> bool:
    return start_time(record.pid) == record.start_time


def start(
    name: str,
    command: Sequence[str],
    log: Path,
    state: State,
    state_file: Path,
    env: dict[str, str] | None = None,
) -> ProcessRecord:
    """Starts COMMAND in a session of its own (so it outlives this Python process and a
    Ctrl+C in the terminal reaches only us), output into LOG, and records it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    started = start_time(process.pid)
    record = ProcessRecord(name, process.pid, started or 0, list(command), str(log))
    state.processes.append(record)
    state.save(state_file)
    if started is None:
        raise ClusterError(f"{name} exited at once:\n{tail(log)}")
    return record


def stop(record: ProcessRecord, timeout: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after TIMEOUT seconds. False when it was not running."""
    if not is_running(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    if not wait_for(lambda: not is_running(record), timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        wait_for(lambda: not is_running(record), 10.0)
    _reap(record.pid)
    return True


def _reap(pid: int) -> None:
    """Collects the exit status when the process was our own child (no zombie left)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def tail(log: Path | str, lines: int = 30) -> str:
    path = Path(log)
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return f"--- last lines of {path} ---\n" + "\n".join(text[-lines:])


def processes_mentioning(fragment: str, names: Collection[str] | None = None) -> Iterator[int]:
    """PIDs whose command line contains FRAGMENT (e.g. the run directory) and, when NAMES is
    given, whose program name (comm) is one of them: how the containerd shims of a crashed run
    are found, without touching, say, a `tail -f` of one of its logs."""
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            name = (entry / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if fragment in command and (names is None or name in names):
            yield int(entry.name)


def kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(start_time(pid) is None for pid in pids), 15.0)
