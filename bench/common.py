"""What the benchmarks share: the machine's description, CPU accounting per process, results."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # the repository: tests' process helpers

from carstream.config import KafkaSettings, Topics  # noqa: E402
from carstream.kafka_admin import TopicAdmin  # noqa: E402
from tests.integration.processes import descendants  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTITIONS = 2  # of every topic a benchmark creates


def bench_topics(prefix: str) -> Topics:
    """The five pipeline topics, named `<prefix>.<topic>`."""
    return Topics(*(f"{prefix}.{name}" for name in Topics().all()))


def create_topics(kafka: KafkaSettings, topics: Topics) -> Topics:
    """Creates `topics` (PARTITIONS each) and returns them."""
    admin = TopicAdmin(kafka)
    try:
        admin.create_topics(topics.all(), partitions=PARTITIONS)
    finally:
        admin.close()
    return topics


def machine() -> dict[str, Any]:
    """The machine a figure was measured on, and how busy it was."""
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "java": java.splitlines()[0] if java else "",
        "kernel": platform.release(),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_label(pid: int) -> str:
    """`python` (this process), `kafka broker`, `spark jvm` or the command's name."""
    if pid == os.getpid():
        return "python (bench process)"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return "gone"
    if "kafka.Kafka" in command:
        return "kafka broker jvm"
    if "SparkSubmit" in command or "spark-class" in command:
        return "spark jvm"
    return Path(command.split(" ", 1)[0]).name


@dataclass
class CpuMeter:
    """CPU seconds used by this process and each of its descendants during a `with` block."""

    seconds: float = 0.0
    cpu_by_process: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self) -> Iterator[CpuMeter]:
        pids = {os.getpid(), *descendants(os.getpid())}
        before = {pid: _cpu_seconds(pid) for pid in pids}
        started = time.monotonic()
        try:
            yield self
        finally:
            self.seconds = time.monotonic() - started
            for pid in pids | descendants(os.getpid()):
                used = _cpu_seconds(pid) - before.get(pid, 0.0)
                label = process_label(pid)
                self.cpu_by_process[label] = self.cpu_by_process.get(label, 0.0) + used

    def cores_used(self) -> dict[str, float]:
        """Average cores each process kept busy (CPU seconds / wall seconds)."""
        if self.seconds <= 0:
            return {}
        return {
            label: round(cpu / self.seconds, 2)
            for label, cpu in sorted(self.cpu_by_process.items(), key=lambda item: -item[1])
            if cpu > 0.05
        }


def command_line() -> str:
    return " ".join(shlex.quote(part) for part in [Path(sys.executable).name, *sys.argv])


def write_result(name: str, result: Mapping[str, Any]) -> Path:
    """bench/results/<name>.json with the figures, the machine and the command."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine(),
        **result,
    }
    path = RESULTS_DIR / f"{name}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)
    return path
