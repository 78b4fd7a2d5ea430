"""A JFR recording of a Spark JVM, summarised: the share of execution samples per kind of
work (the first frame from the top of the stack in a known package), the top methods, the
busiest threads and the garbage collections, within a time window (the JDK's `jfr print`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from carstream.broker import java_executable

JFR_STACK_DEPTH = 96
TOP_METHODS = 15
TOP_THREADS = 10
# Kinds of work, by the first frame from the top of the stack that contains one of the
# patterns (checked kind by kind, in this order, for each frame). The rest is "other".
WORK_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("json parsing (from_json)", ("JsonToStructs", "JacksonParser", "JsonParser")),
    ("json writing (to_json)", ("StructsToJson", "JacksonGenerator", "JsonGenerator")),
    (
        "timestamp parsing/formatting",
        ("TimestampFormatter", "DateTimeUtils", "DateFormatter", "java.time.format."),
    ),
    ("kafka clients", ("org.apache.kafka.",)),
    ("spark kafka source/sink", ("org.apache.spark.sql.kafka010.",)),
    ("generated code (whole-stage codegen)", ("GeneratedClass", "GeneratedIterator")),
    ("state store", ("execution.streaming.state.", "org.rocksdb.")),
    ("string functions (ICU)", ("com.ibm.icu.",)),
    (
        "compression/checksums",
        ("net.jpountz.", "xerial.snappy", "luben.zstd", "CRC32", "Inflater", "Deflater"),
    ),
    ("class loading/jar reading", ("java.util.zip.ZipFile", "java.util.jar.", "ClassLoader")),
    (
        "query planning/code compilation (per micro-batch)",
        (
            "catalyst.rules.",
            "catalyst.analysis.",
            "catalyst.optimizer.",
            "catalyst.trees.",
            "catalyst.planning.",
            "CodeGenerator",
            "org.codehaus.",
        ),
    ),
    ("checkpoint files (hadoop fs)", ("org.apache.hadoop.",)),
    ("shuffle/block storage", ("org.apache.spark.shuffle.", "org.apache.spark.storage.")),
    ("logging", ("org.apache.logging.", "org.slf4j.")),
    ("JFR itself", ("jdk.jfr.",)),
)
# jfr print's time: `15:08:49.200`, with ` (2026-11-30)` only for another day than today's.
_JFR_TIME = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:\s+\((\d{4}-\d{2}-\d{2})\))?")
HALF_DAY_SECONDS = 12 * 3600
_JFR_DURATION = re.compile(r"([\d.,]+)\s*(ns|us|ms|s|m|h)\b")
_DURATION_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class ExecutionSample:
    at: float | None  # epoch seconds; None when the time could not be read
    thread: str = ""
    frames: list[str] = field(default_factory=list)  # top of the stack first


def jfr_tool() -> Path:
    """The JDK's `jfr`, next to the java the toolchain uses (JAVA_HOME or PATH)."""
    java = Path(java_executable()).resolve()
    candidate = java.parent / "jfr"
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("jfr")
    if found is None:
        raise FileNotFoundError(f"no jfr next to {java} nor on PATH")
    return Path(found)


def _jfr_time(text: str, near: float) -> float | None:
    """`15:05:14.123` or `15:05:14.123 (2026-01-31)` (jfr print's local time) -> epoch
    seconds; without a day, the one that puts it nearest to `near` (epoch seconds)."""
    match = _JFR_TIME.search(text)
    if match is None:
        return None
    hours, minutes, seconds, fraction, day = match.groups()
    day = day or datetime.fromtimestamp(near).date().isoformat()
    moment = datetime.fromisoformat(f"{day}T{int(hours):02d}:{minutes}:{seconds}").timestamp()
    if not match.group(5):
        moment += round((near - moment) / (2 * HALF_DAY_SECONDS)) * 2 * HALF_DAY_SECONDS
    return moment + float(f"0.{fraction or 0}")


def _jfr_events(tool: Path, recording: Path, event: str) -> Iterator[list[str]]:
    """The lines of each `event` in `jfr print` (streamed: a profile prints hundreds of MB)."""
    command = [str(tool), "print", "--events", event, "--stack-depth", str(JFR_STACK_DEPTH)]
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [*command, str(recording)], stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process,
    ):
        assert process.stdout is not None
        lines: list[str] | None = None
        for line in process.stdout:
            if line.startswith(f"{event} {{") or line.startswith(f"{event.split('.')[-1]} {{"):
                lines = []
            elif line.rstrip() == "}" and lines is not None:
                yield lines
                lines = None
            elif lines is not None:
                lines.append(line.strip())
        if process.wait() != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed: {errors.read().decode()[-2000:]}")


def _execution_sample(lines: Sequence[str], near: float) -> ExecutionSample:
    sample = ExecutionSample(at=None)
    in_stack = False
    for line in lines:
        if in_stack:
            if line == "]":
                in_stack = False
            elif line != "...":
                sample.frames.append(re.sub(r"\s+line:.*$", "", line))
        elif line.startswith("startTime = "):
            sample.at = _jfr_time(line, near)
        elif line.startswith("sampledThread = "):
            quoted = re.search(r'"(.*)"', line)
            sample.thread = quoted.group(1) if quoted else line.split("=", 1)[1].strip()
        elif line.startswith("stackTrace = ["):
            in_stack = True
    return sample


def work_kind(frames: Sequence[str]) -> str:
    for frame in frames:
        for kind, patterns in WORK_KINDS:
            if any(pattern in frame for pattern in patterns):
                return kind
    return "other"


def thread_group(name: str) -> str:
    """A thread's name without its numbers and query ids: `Executor task launch worker-N`,
    `stream execution thread for count`."""
    return re.sub(r"\d+", "N", re.sub(r"\s*\[id = [^\]]*\]", "", name))


def _shares(counts: Counter[str], total: int, top: int | None = None) -> dict[str, float]:
    """Percent of `total` of each of the `top` most common."""
    return {name: round(100 * count / total, 1) for name, count in counts.most_common(top)}


def _gc_pauses(tool: Path, recording: Path, window: tuple[float, float]) -> dict[str, Any]:
    """The garbage collections within the window and the sum of their pauses."""
    collections, paused = 0, 0.0
    for lines in _jfr_events(tool, recording, "jdk.GarbageCollection"):
        at = next(
            (_jfr_time(line, window[0]) for line in lines if line.startswith("startTime")), None
        )
        if at is not None and not window[0] <= at <= window[1]:
            continue
        collections += 1
        for line in lines:
            if line.startswith("sumOfPauses"):
                match = _JFR_DURATION.search(line.split("=", 1)[1])
                if match:
                    number, unit = match.groups()
                    paused += float(number.replace(",", "")) * _DURATION_SECONDS[unit]
    share = paused / (window[1] - window[0]) if window[1] > window[0] else 0.0
    return {
        "collections": collections,
        "pause_seconds": round(paused, 2),
        "pause_share_percent": round(100 * share, 1),
    }


def summarize_profile(recording: Path, window: tuple[float, float]) -> dict[str, Any]:
    """What the Spark JVM did during the window; the error instead if that can't be told."""
    try:
        return _summarize_profile(recording, window)
    except Exception as error:  # the profile is an extra: a failure here never loses a step
        return {"error": f"{type(error).__name__}: {error}"}


def _summarize_profile(recording: Path, window: tuple[float, float]) -> dict[str, Any]:
    if not recording.is_file():
        raise FileNotFoundError(f"{recording} was not written (did Spark's JVM exit cleanly?)")
    tool = jfr_tool()
    kinds: Counter[str] = Counter()
    tops: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    outside = undated = 0
    for lines in _jfr_events(tool, recording, "jdk.ExecutionSample"):
        sample = _execution_sample(lines, window[0])
        if sample.at is None:
            undated += 1
        elif not window[0] <= sample.at <= window[1]:
            outside += 1
            continue
        kinds[work_kind(sample.frames)] += 1
        tops[sample.frames[0] if sample.frames else "(no stack)"] += 1
        threads[thread_group(sample.thread)] += 1
    total = sum(kinds.values())
    if total == 0:
        raise RuntimeError(f"no execution samples in the window ({outside} outside it)")
    return {
        "recording_mb": round(recording.stat().st_size / 1e6, 1),
        "execution_samples": total,
        "samples_outside_window": outside,
        "samples_without_time": undated,
        "work_percent": _shares(kinds, total),
        "top_methods_percent": _shares(tops, total, TOP_METHODS),
        "threads_percent": _shares(threads, total, TOP_THREADS),
        "gc": _gc_pauses(tool, recording, window),
    }
