"""The whole pipeline's sustained capacity on this machine, `carstream run`-style: the
generator, the streaming queries and one local Spark session in one process, offered higher
and higher rates until it falls behind; then its latency at 25%, 50% and 90% of that.

    python bench/capacity.py [--start-rate 5000] [--factor 1.5] [--refine 2]
        [--step-seconds 60] [--warm-up 15] [--trigger-interval "1 second"] [--partitions 2]
        [--no-fuse] [--profile] [--max-rate 200000] [--work-dir DIR]
        [--dry-run-steps 5000,10000]

The bench starts one Kafka broker of its own. Each step is a `carstream run --bootstrap-servers
<that broker> --fresh --rate R` subprocess with its own state folder, its own topics
(`cap-<step>.sensors-sample`, ...) and its own pipeline name (`cap<step>`, hence its own
consumer groups), stopped with SIGTERM once measured. `--no-fuse` is passed on to it.

Backlog: the queries commit the offsets they have processed to the consumer groups
`<pipeline>.<query>` after every micro-batch. Every SAMPLE_SECONDS the bench reads, for each
group of the step's pipeline, the committed offsets on the step's topics and the topics' end
offsets: the records behind are the end offsets minus the committed ones, over the partitions
of every topic the group has committed on (its input).

Measurement window: the generator starts with the streams, whose first micro-batches (Spark
compiling code, the JIT warming up) are slow, so the queries start behind. The window opens
at least --warm-up seconds after the first commit of a group, once the queries have caught up
(every query the run says it started has committed, every backlog is below the final limit
below), or MAX_CATCH_UP_SECONDS later if they never do; it lasts --step-seconds. A step is
sustained when, over that window,
  - the generator really offered the rate: the sensor topic grew by at least
    OFFERED_MIN_FRACTION x R per second (on 2 cores the generator competes with Spark for
    CPU: a machine that cannot even produce R does not sustain R);
  - no group falls behind: its backlog's troughs (the lowest reading of each half of the
    window: right after a micro-batch) grow by less than MAX_SLOPE_FRACTION x R per second,
    and its last backlog is below R x (the longer trigger interval +
    FINAL_BACKLOG_SLACK_SECONDS). Troughs, not a least-squares slope: with a counter
    triggered every 10 s the backlog is a sawtooth whose fitted slope swings with the phase
    of the window (the slope is reported too);
  - every query the run started has committed (a query whose micro-batch outlasts the
    window would otherwise go unseen), and `carstream run` was still running.
The search offers --start-rate, then x --factor until a step is not sustained (if the first
is not, it goes down by the same factor), then bisects --refine times between the highest
sustained and the lowest failed rate. The highest sustained rate is the result; then the
pipeline runs at 25%, 50% and 90% of it for its latency. --dry-run-steps measures only the
given rates (no search, no fractions).

Latency: for each alert of an event sent during the window, the alert's Kafka timestamp
(CreateTime, set when Spark's sink produced it) minus the event's `event_time` (set by the
generator, wall clock, when it sent the event); p50, p95, p99 and max. The run goes on for
max(MIN_TAIL_SECONDS, 3 trigger intervals) after the window so that the last events' alerts
are out before it stops (in a step that was not sustained they may not be: its latency is
then a lower bound).

CPU: CPU seconds of each process during the window, as cores (CPU seconds / wall seconds):
the Spark JVM, Python (`carstream run`: the generator, the driver's Python side), the Kafka
broker JVM and the bench itself. With --profile, the Spark JVM of the 90% step (or of the last
--dry-run-steps rate) records a JFR profile (settings=profile, through SPARK_SUBMIT_OPTS, which
reaches the driver JVM only: not spark-submit's launcher, not the bench's own broker); its
execution samples taken during the window are summarised by the JDK's `jfr print`: the share
of samples per kind of work (the first frame from the top of the stack in a known package),
the top methods on top of the stack, the busiest threads and the GC pauses.

Results go to bench/results/capacity.json (common.write_result). Keep other work off the
machine while it runs: every figure depends on the two cores being the pipeline's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import CpuMeter, write_result
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from jfr_profile import summarize_profile
from latency import _epoch_millis, percentile

from carstream.broker import EmbeddedBroker
from carstream.config import KafkaSettings, Topics, interval_seconds
from carstream.kafka_admin import TopicAdmin, client_config
from tests.integration.processes import CARSTREAM, kill_group, start_carstream

# -- what "sustained" means ----------------------------------------------------------------
# The sensor topic must grow by at least this fraction of the offered rate: below it the
# generator (sharing the cores with Spark) could not even produce the rate.
OFFERED_MIN_FRACTION = 0.95
# A group's backlog troughs may grow by at most this fraction of the rate per second (the
# lowest reading of the window's second half minus that of its first half, over half the
# window). A backlog that only oscillates between micro-batches has flat troughs; a pipeline
# 5% short of the rate grows them by at least 0.05 x R per second. Not less than that: a
# trough moves by R x (the jitter of a micro-batch's duration) from one batch to the next,
# and with a counter triggered every 10 s a 60 s window has three troughs per half (at 2%,
# runs of 2026-11-30 failed 1,500 and 2,700 events/s by troughs of +53 and +103 records/s,
# one second of events, while 3,000 passed and every fitted slope was negative).
MAX_SLOPE_FRACTION = 0.05
# A group's last backlog must stay below R x (trigger interval + this): one trigger interval
# of records waits for the next micro-batch, plus a batch's own duration and the records of
# the stage before it still in flight.
FINAL_BACKLOG_SLACK_SECONDS = 5.0

# -- how a step runs -----------------------------------------------------------------------
# The generator starts with the streams, whose first micro-batches (Spark compiling code, JIT)
# take tens of seconds: the queries start behind. The window opens once they have caught up
# (every backlog below the final limit above) after --warm-up, or after this many more
# seconds if they never do (the step then fails on its backlog).
MAX_CATCH_UP_SECONDS = 120.0
SAMPLE_SECONDS = 2.0  # between two backlog readings
# After the window the run goes on for max(this, 3 trigger intervals) so that the alerts of
# the window's last events are out before it stops (else the slowest would be missing).
MIN_TAIL_SECONDS = 10.0
STARTUP_TIMEOUT_SECONDS = 300.0  # from the process start to the first commit of a group
STOP_TIMEOUT_SECONDS = 120.0  # SIGTERM to exit: queries, Spark's JVM (and its JFR dump)
DURATION_MARGIN_SECONDS = 60.0  # --duration: a safety net only, the bench stops the run
KAFKA_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 15  # of a run's log, in the reason of a step that failed
BROKER_HEAP = "1g"
PIPELINE_PREFIX = "cap"  # step N runs pipeline capN on topics cap-N.<topic>

# -- the search ----------------------------------------------------------------------------
RATE_STEP = 100  # offered rates are multiples of this
MIN_RATE = 500  # going down from a --start-rate that failed stops below this
FRACTIONS = (0.25, 0.5, 0.9)  # of the highest sustained rate, measured for their latency
PROFILED_FRACTION = 0.9


class StepFailed(RuntimeError):
    """The step's `carstream run` ended early or never committed: nothing to measure."""


@dataclass(frozen=True)
class Sample:
    """One reading: when (monotonic seconds), the sensor topic's end, each group's backlog."""

    at: float
    sensors_end: int
    backlogs: dict[str, int]


@dataclass
class Observation:
    """What was read while a step ran."""

    samples: list[Sample] = field(default_factory=list)  # those of the window
    window: tuple[float, float] = (0.0, 0.0)  # wall clock (epoch seconds)
    startup_seconds: float = 0.0  # from the process start to the first commit
    warm_up_seconds: float = 0.0  # from the first commit to the window
    caught_up: bool = False  # the backlogs were all small once before the window
    expected_groups: list[str] = field(default_factory=list)  # from the run's log
    meter: CpuMeter = field(default_factory=CpuMeter)
    sample_errors: int = 0


@dataclass
class Bench:
    """The settings, the broker every step uses, and the steps measured so far."""

    args: argparse.Namespace
    kafka: KafkaSettings
    work: Path
    trigger_seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def keep_files(self) -> bool:
        """Whether the work folder (logs, JFR) outlives the bench: with --work-dir."""
        return self.args.work_dir is not None


# -- reading backlogs ----------------------------------------------------------------------


class BacklogProbe:
    """Reads, for one step, the sensor topic's end offset and each consumer group's backlog.

    The groups are those of the step's pipeline (`<pipeline>.<query>`), whatever the query
    names. Committed offsets come from a consumer of the group that never joins it (an
    OffsetFetch), not from the admin API's list_consumer_group_offsets, which crashes this
    librdkafka when the group's coordinator is still loading."""

    def __init__(self, kafka: KafkaSettings, pipeline: str, topics: Topics) -> None:
        self._config = client_config(kafka)
        self._admin = AdminClient(self._config)
        self._topic_admin = TopicAdmin(kafka, timeout=KAFKA_TIMEOUT_SECONDS)
        self.pipeline = pipeline
        self._prefix = f"{pipeline}."
        self._topics = topics
        self._consumers: dict[str, Consumer] = {}
        self._seen: set[str] = set()

    def groups(self) -> list[str]:
        """The consumer groups of the pipeline that exist: those that committed once. A group
        once seen stays in the set: listing is only how new ones are found."""
        future = self._admin.list_consumer_groups(request_timeout=KAFKA_TIMEOUT_SECONDS)
        listing = future.result(timeout=KAFKA_TIMEOUT_SECONDS)
        self._seen.update(
            group.group_id
            for group in listing.valid or []
            if group.group_id and group.group_id.startswith(self._prefix)
        )
        return sorted(self._seen)

    def sample(self) -> Sample:
        """Committed offsets first, end offsets after: a backlog is never negative."""
        partitions = [
            (topic, partition)
            for topic in self._topics.all()
            for partition in self._topic_admin.partitions(topic)
        ]
        committed = {group: self._committed(group, partitions) for group in self.groups()}
        end = self._topic_admin.partition_end_offsets(self._topics.all())
        sensors_end = sum(
            offset for (topic, _), offset in end.items() if topic == self._topics.sensors
        )
        backlogs = {group: _backlog(offsets, end) for group, offsets in committed.items()}
        return Sample(time.monotonic(), sensors_end, backlogs)

    def _committed(
        self, group: str, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = Consumer({**self._config, "group.id": group, "enable.auto.commit": False})
            self._consumers[group] = consumer
        found = consumer.committed(
            [TopicPartition(topic, partition) for topic, partition in partitions],
            timeout=KAFKA_TIMEOUT_SECONDS,
        )
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()
        self._topic_admin.close()


def _backlog(committed: dict[tuple[str, int], int], end: dict[tuple[str, int], int]) -> int:
    """Records behind over every partition of the topics the group has committed on (its
    inputs); a partition of such a topic never committed counts from its start (0: the
    step's topics are new)."""
    inputs = {topic for topic, _ in committed}
    return sum(
        max(0, offset - committed.get(tp, 0)) for tp, offset in end.items() if tp[0] in inputs
    )


# -- running a step ------------------------------------------------------------------------


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _check_running(process: subprocess.Popen[bytes], log: Path) -> None:
    code = process.poll()
    if code is not None:
        raise StepFailed(f"carstream run exited with code {code}; its log ends:\n{_log_tail(log)}")


def _wait_for_first_commit(
    process: subprocess.Popen[bytes], probe: BacklogProbe, log: Path
) -> None:
    """Until a group of the pipeline exists: Spark has started and a micro-batch is done."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        _check_running(process, log)
        with contextlib.suppress(KafkaException):
            if probe.groups():
                return
        if time.monotonic() > deadline:
            raise StepFailed(
                f"no consumer group committed within {STARTUP_TIMEOUT_SECONDS:g} s; the log "
                f"ends:\n{_log_tail(log)}"
            )
        time.sleep(1.0)


def _sample_until(
    deadline: float,
    process: subprocess.Popen[bytes],
    probe: BacklogProbe,
    log: Path,
    observation: Observation,
    keep: bool,
    until: Callable[[Sample], bool] | None = None,
) -> bool:
    """Samples every SAMPLE_SECONDS, and once more at `deadline` (monotonic); `keep`: into
    the observation's samples. A reading Kafka refused is counted and skipped. True when it
    stopped before the deadline because a sample met `until`."""
    next_at = time.monotonic()
    while True:
        _check_running(process, log)
        try:
            sample = probe.sample()
        except KafkaException:
            observation.sample_errors += 1
        else:
            if keep:
                observation.samples.append(sample)
            if until is not None and until(sample):
                return True
        now = time.monotonic()
        if now >= deadline:
            return False
        next_at += SAMPLE_SECONDS
        time.sleep(max(0.0, min(next_at, deadline) - now))


def _wait_running(process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _check_running(process, log)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def tail_seconds(trigger_seconds: float) -> float:
    return max(MIN_TAIL_SECONDS, 3 * trigger_seconds)


def expected_groups(log: Path, pipeline: str) -> list[str]:
    """The groups of the queries `carstream run` says it started ("streams started: a, b
    (trigger ..."); [] when its log does not say (then only the groups seen count)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    match = re.search(r"streams started: ([^(\n]+)", text)
    if match is None:
        return []
    queries = [name.strip() for name in match.group(1).split(",") if name.strip()]
    return [f"{pipeline}.{query}" for query in queries]


def caught_up(sample: Sample, groups: Sequence[str], limit: float) -> bool:
    """Every expected group has committed, and every group's backlog is below `limit`."""
    return all(group in sample.backlogs for group in groups) and all(
        backlog <= limit for backlog in sample.backlogs.values()
    )


def observe(
    bench: Bench,
    process: subprocess.Popen[bytes],
    probe: BacklogProbe,
    log: Path,
    rate: int,
) -> Observation:
    """Start-up, warm-up (at least --warm-up, until caught up), the measured window (CPU
    metered), then the tail."""
    observation = Observation()
    started = time.monotonic()
    _wait_for_first_commit(process, probe, log)
    first_commit = time.monotonic()
    observation.startup_seconds = round(first_commit - started, 1)
    observation.expected_groups = expected_groups(log, probe.pipeline)
    _sample_until(first_commit + bench.args.warm_up, process, probe, log, observation, False)
    limit = final_backlog_limit(rate, bench.trigger_seconds)
    observation.caught_up = _sample_until(
        time.monotonic() + MAX_CATCH_UP_SECONDS,
        process,
        probe,
        log,
        observation,
        keep=False,
        until=lambda sample: caught_up(sample, observation.expected_groups, limit),
    )
    observation.warm_up_seconds = round(time.monotonic() - first_commit, 1)
    with observation.meter.measure():
        window_start = time.time()
        window_end_at = time.monotonic() + bench.args.step_seconds
        _sample_until(window_end_at, process, probe, log, observation, keep=True)
        observation.window = (window_start, time.time())
    _wait_running(process, log, tail_seconds(bench.trigger_seconds))
    return observation


@contextlib.contextmanager
def pipeline_process(
    args: Sequence[str], log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`carstream ARGS` in its own process group; stopped on the way out whatever happens."""
    process = start_carstream(args, log, env)
    try:
        yield process
    finally:
        if process.returncode is None:
            stop_pipeline(process)


def stop_pipeline(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the run stops its generator, queries, Spark: its JFR recording is written),
    SIGKILL to the whole process group after STOP_TIMEOUT_SECONDS or on a second Ctrl+C."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_SECONDS)
    finally:
        kill_group(process)  # what is left of its group: a Spark JVM the run did not stop
    return process.returncode


def run_arguments(
    bench: Bench, rate: int, pipeline: str, topics: Topics, state_dir: Path
) -> list[str]:
    args = bench.args
    duration = (
        STARTUP_TIMEOUT_SECONDS
        + args.warm_up
        + MAX_CATCH_UP_SECONDS
        + args.step_seconds
        + tail_seconds(bench.trigger_seconds)
        + DURATION_MARGIN_SECONDS
    )
    command = [
        "run",
        "--bootstrap-servers",
        bench.kafka.bootstrap_servers,
        "--state-dir",
        str(state_dir),
        "--fresh",
        "--rate",
        str(rate),
        "--duration",
        f"{duration:.0f}",
        "--trigger-interval",
        args.trigger_interval,
        "--count-trigger-interval",
        args.count_trigger_interval,
        "--partitions",
        str(args.partitions),
        "--pipeline",
        pipeline,
        "--progress-interval",
        "10",
        "--topic-sensors",
        topics.sensors,
        "--topic-enriched",
        topics.enriched,
        "--topic-alerts",
        topics.alerts,
        "--topic-counts",
        topics.counts,
        "--topic-dlq",
        topics.dlq,
    ]
    if args.no_fuse:
        command.append("--no-fuse")
    command += shlex.split(args.run_args)
    return command


def step_topics(number: int) -> Topics:
    return Topics(*(f"cap-{number}.{name}" for name in Topics().all()))


def measure(bench: Bench, rate: int, purpose: str, *, profile: bool = False) -> dict[str, Any]:
    """Runs `carstream run` at `rate` events/s and tells whether it sustained it, its latency
    and where the CPU went (and, with `profile`, what the Spark JVM did)."""
    number = len(bench.steps) + 1
    pipeline = f"{PIPELINE_PREFIX}{number}"
    topics = step_topics(number)
    log = bench.work / f"step-{number}.log"
    recording = bench.work / f"step-{number}-spark.jfr"
    env: dict[str, str] = {}
    if profile:
        env["SPARK_SUBMIT_OPTS"] = " ".join(
            filter(
                None,
                [
                    os.environ.get("SPARK_SUBMIT_OPTS", ""),
                    f"-XX:StartFlightRecording=filename={recording},settings=profile,"
                    "dumponexit=true",
                ],
            )
        )
    print(f"step {number}: {rate:,} events/s ({purpose})", flush=True)
    step: dict[str, Any] = {
        "step": number,
        "purpose": purpose,
        "rate_offered": rate,
        # other work on the machine skews every figure: this tells how busy it was
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    arguments = run_arguments(bench, rate, pipeline, topics, bench.work / f"step-{number}")
    probe = BacklogProbe(bench.kafka, pipeline, topics)
    observation: Observation | None = None
    try:
        with pipeline_process(arguments, log, env) as process:
            try:
                observation = observe(bench, process, probe, log, rate)
            except StepFailed as error:
                step.update(sustained=False, why=[str(error)])
            step["exit_code"] = stop_pipeline(process)
    finally:
        probe.close()
    if observation is not None:
        step.update(
            judge(rate, observation.samples, bench.trigger_seconds, observation.expected_groups)
        )
        step["caught_up_before_window"] = observation.caught_up
        step["warm_up_seconds"] = observation.warm_up_seconds
        step["window"] = [
            datetime.fromtimestamp(bound, UTC).isoformat(timespec="seconds")
            for bound in observation.window
        ]
        step["window_seconds"] = round(observation.window[1] - observation.window[0], 1)
        step["startup_seconds"] = observation.startup_seconds
        step["sample_errors"] = observation.sample_errors
        step["latency_ms"] = alert_latencies(bench.kafka, topics.alerts, observation.window)
        step["cores_used"] = cores_used(observation.meter)
        if profile:
            step["profile"] = summarize_profile(recording, observation.window)
    if bench.keep_files:
        step["log"] = str(log)
    _delete_topics(bench.kafka, topics)
    bench.steps.append(step)
    print(f"  {describe_step(step)}", flush=True)
    return step


def _delete_topics(kafka: KafkaSettings, topics: Topics) -> None:
    """The step's data goes: at tens of thousands of events/s the broker's disk fills fast."""
    admin = TopicAdmin(kafka)
    try:
        admin.delete_topics(list(topics.all()))
    except KafkaException as error:
        print(f"  (could not delete the step's topics: {error})", file=sys.stderr)
    finally:
        admin.close()


# -- judging a step ------------------------------------------------------------------------


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """The slope of the least-squares line through (x, y) points (at least two distinct x)."""
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def trough_growth(points: Sequence[tuple[float, float]]) -> float:
    """Per second, how much the lowest backlog of the second half of the readings exceeds
    that of the first half (over the time between the halves' middles)."""
    half = len(points) // 2
    first, second = points[:half], points[half:]
    seconds = (second[0][0] + second[-1][0] - first[0][0] - first[-1][0]) / 2
    lows = min(y for _, y in first), min(y for _, y in second)
    return (lows[1] - lows[0]) / seconds if seconds > 0 else math.nan


def final_backlog_limit(rate: int, trigger_seconds: float) -> float:
    return rate * (trigger_seconds + FINAL_BACKLOG_SLACK_SECONDS)


def judge(
    rate: int, samples: Sequence[Sample], trigger_seconds: float, expected: Sequence[str] = ()
) -> dict[str, Any]:
    """Sustained or not, and why; the rate really offered; each group's backlog figures.
    `expected`: groups that must have committed (those of the queries the run started)."""
    if len(samples) < 3:
        return {"sustained": False, "why": [f"only {len(samples)} readings in the window"]}
    first, last = samples[0], samples[-1]
    offered = (last.sensors_end - first.sensors_end) / (last.at - first.at)
    slope_limit = MAX_SLOPE_FRACTION * rate
    final_limit = final_backlog_limit(rate, trigger_seconds)
    failures: list[str] = []
    if offered < OFFERED_MIN_FRACTION * rate:
        failures.append(
            f"the generator offered only {offered:,.0f} events/s "
            f"(< {OFFERED_MIN_FRACTION:.0%} of {rate:,})"
        )
    groups: dict[str, dict[str, Any]] = {}
    for group in sorted({name for sample in samples for name in sample.backlogs}):
        points = [(s.at, float(s.backlogs[group])) for s in samples if group in s.backlogs]
        slope = least_squares_slope(points) if len(points) >= 3 else math.nan
        growth = trough_growth(points) if len(points) >= 3 else math.nan
        final = int(points[-1][1])
        groups[group] = {
            "final_backlog": final,
            "max_backlog": int(max(backlog for _, backlog in points)),
            "slope_per_second": round(slope, 1),
            "trough_growth_per_second": round(growth, 1),
            "readings": len(points),
        }
        if len(points) < 3:
            failures.append(f"{group}: only {len(points)} readings in the window")
        elif growth > slope_limit:
            failures.append(
                f"{group}'s backlog troughs grew by {growth:,.0f} records/s "
                f"(limit {slope_limit:,.0f})"
            )
        if final > final_limit:
            failures.append(f"{group}'s backlog ended at {final:,} (limit {final_limit:,.0f})")
    if not groups:
        failures.append("no consumer group of the pipeline in the window")
    failures.extend(
        f"{group} committed nothing (its query never finished a micro-batch)"
        for group in expected
        if group not in groups
    )
    why = failures or [
        f"offered {offered:,.0f} events/s; every group's backlog troughs flat (<= "
        f"{slope_limit:,.0f}/s) and ending below {final_limit:,.0f}"
    ]
    return {
        "sustained": not failures,
        "why": why,
        "rate_achieved": round(offered, 1),
        "groups": groups,
    }


# -- latency -------------------------------------------------------------------------------


def alert_latencies(
    kafka: KafkaSettings, topic: str, window: tuple[float, float]
) -> dict[str, Any]:
    """Kafka timestamp minus event_time of the alerts of events sent within `window` (wall
    clock): alerts are read from the first one written at or after the window's start (an
    alert is never written before its event was sent) to the topic's end."""
    start_ms, end_ms = (round(bound * 1000) for bound in window)
    admin = TopicAdmin(kafka, timeout=KAFKA_TIMEOUT_SECONDS)
    try:
        partitions = admin.partitions(topic)
    finally:
        admin.close()
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": f"capacity-latency-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    latencies: list[float] = []
    unreadable = 0
    try:
        firsts = consumer.offsets_for_times(
            [TopicPartition(topic, partition, start_ms) for partition in partitions],
            timeout=KAFKA_TIMEOUT_SECONDS,
        )
        ends = {
            partition: consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=KAFKA_TIMEOUT_SECONDS
            )[1]
            for partition in partitions
        }
        start = [tp for tp in firsts if 0 <= tp.offset < ends[tp.partition]]
        pending = {tp.partition for tp in start}
        consumer.assign(start)
        while pending:
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                if error is not None:
                    raise KafkaException(error)
                partition, offset = message.partition(), message.offset()
                if partition not in pending or offset is None or offset >= ends[partition]:
                    continue
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
                try:
                    sent_ms = _epoch_millis(json.loads(message.value() or b"")["event_time"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    unreadable += 1
                    continue
                if start_ms <= sent_ms < end_ms:
                    latencies.append(message.timestamp()[1] - sent_ms)
    finally:
        consumer.close()
    return latency_summary(latencies, unreadable)


def latency_summary(latencies: list[float], unreadable: int = 0) -> dict[str, Any]:
    latencies.sort()
    summary: dict[str, Any] = {"alerts": len(latencies)}
    if latencies:
        summary.update(
            p50=percentile(latencies, 0.50),
            p95=percentile(latencies, 0.95),
            p99=percentile(latencies, 0.99),
            max=latencies[-1],
        )
    if unreadable:
        summary["unreadable_alerts"] = unreadable
    return summary


# -- CPU -----------------------------------------------------------------------------------

# common.process_label's labels -> the parts reported; any other label is a Python process of
# the run (`carstream run` itself, or a pyspark worker).
CPU_PARTS = {
    "spark jvm": "spark jvm",
    "kafka broker jvm": "kafka broker jvm",
    "python (bench process)": "bench (sampling)",
}
CARSTREAM_PYTHON = "python (carstream run)"


def cores_used(meter: CpuMeter) -> dict[str, float]:
    """Cores each part kept busy during the window (CPU seconds / wall seconds), and in all.
    A process gone during the window ("gone") is left out: its CPU time can't be read."""
    if meter.seconds <= 0:
        return {}
    seconds: dict[str, float] = {}
    for label, used in meter.cpu_by_process.items():
        if label != "gone":
            part = CPU_PARTS.get(label, CARSTREAM_PYTHON)
            seconds[part] = seconds.get(part, 0.0) + max(0.0, used)
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    cores = {part: round(used / meter.seconds, 2) for part, used in ranked}
    cores["total"] = round(sum(seconds.values()) / meter.seconds, 2)
    return cores


# -- the search ----------------------------------------------------------------------------


def round_rate(rate: float) -> int:
    return max(RATE_STEP, round(rate / RATE_STEP) * RATE_STEP)


def search(bench: Bench) -> dict[str, Any]:
    """Up by --factor from --start-rate until a step fails (down if the first fails), then
    --refine bisections: the highest sustained rate, the lowest failed one."""
    args = bench.args
    low: int | None = None
    high: int | None = None
    capped = False
    rate = round_rate(min(args.start_rate, args.max_rate))
    while True:
        if measure(bench, rate, "search")["sustained"]:
            low = rate
            if rate >= args.max_rate:
                capped = True
                break
            rate = max(rate + RATE_STEP, min(round_rate(rate * args.factor), args.max_rate))
        else:
            high = rate
            break
    while low is None:
        rate = round_rate(rate / args.factor)
        if rate < MIN_RATE or rate >= (high or math.inf):
            break
        if measure(bench, rate, "search (down)")["sustained"]:
            low = rate
        else:
            high = rate
    for _ in range(args.refine if low is not None and high is not None else 0):
        assert low is not None and high is not None
        middle = round_rate((low + high) / 2)
        if not low < middle < high:
            break
        if measure(bench, middle, "refine")["sustained"]:
            low = middle
        else:
            high = middle
    return {
        "highest_sustained_events_per_second": low,
        "lowest_failed_events_per_second": high,
        "capped_at_max_rate": capped,
    }


def at_fractions(bench: Bench, best: int) -> dict[str, Any]:
    """The pipeline at FRACTIONS of its capacity: latency, sustained or not, cores."""
    found: dict[str, Any] = {}
    for fraction in FRACTIONS:
        profile = bench.args.profile and fraction == PROFILED_FRACTION
        step = measure(
            bench, round_rate(best * fraction), f"{fraction:.0%} of capacity", profile=profile
        )
        found[f"{fraction:.0%}"] = {
            key: step.get(key)
            for key in ("step", "rate_offered", "sustained", "latency_ms", "cores_used")
        }
    return found


# -- output --------------------------------------------------------------------------------


def describe_step(step: dict[str, Any]) -> str:
    """One line: sustained or not, the offered rate, backlog, latency, cores."""
    verdict = "sustained" if step.get("sustained") else "NOT sustained"
    parts = [f"{verdict} at {step['rate_offered']:,} events/s"]
    if "rate_achieved" in step:
        parts.append(f"offered {step['rate_achieved']:,.0f}/s")
    groups = step.get("groups") or {}
    if groups:
        worst = max(groups.values(), key=lambda figures: figures["final_backlog"])
        steepest = max(figures["slope_per_second"] for figures in groups.values())
        parts.append(f"final backlog <= {worst['final_backlog']:,}, slope <= {steepest:,.0f}/s")
    latency = step.get("latency_ms") or {}
    if latency.get("alerts"):
        parts.append(
            f"latency p50 {latency['p50']:,.0f} p95 {latency['p95']:,.0f} "
            f"p99 {latency['p99']:,.0f} max {latency['max']:,.0f} ms "
            f"({latency['alerts']:,} alerts)"
        )
    cores = step.get("cores_used") or {}
    if cores:
        parts.append("cores " + ", ".join(f"{part} {used:g}" for part, used in cores.items()))
    text = "; ".join(parts)
    if not step.get("sustained"):
        text += "\n    why: " + "\n    why: ".join(step.get("why") or [])
    return text


def print_summary(result: dict[str, Any]) -> None:
    settings = result["settings"]
    fuse = {True: "fused", False: "not fused", None: "carstream run's own (no --fuse flag)"}
    print(
        f"\ncarstream run capacity (trigger {settings['trigger_interval']}, count every "
        f"{settings['count_trigger_interval']}, "
        f"{settings['partitions']} partitions, {fuse[settings['fuse']]}):"
    )
    for step in result["steps"]:
        print(f"  step {step['step']} ({step['purpose']}): {describe_step(step)}")
    best = result["highest_sustained_events_per_second"]
    print(f"highest sustained rate: {f'{best:,} events/s' if best else 'none'}")
    for fraction, figures in (result.get("latency_at_fraction") or {}).items():
        latency = figures.get("latency_ms") or {}
        figures_text = (
            f"p50 {latency['p50']:,.0f} / p95 {latency['p95']:,.0f} / p99 {latency['p99']:,.0f} ms"
            if latency.get("alerts")
            else "no alerts"
        )
        verdict = "sustained" if figures.get("sustained") else "NOT sustained"
        print(f"  at {fraction} ({figures['rate_offered']:,}/s, {verdict}): {figures_text}")
    profile = result.get("profile")
    if profile:
        if "error" in profile:
            print(f"profile: {profile['error']}")
        else:
            print(f"profile of the Spark JVM ({profile['execution_samples']:,} samples):")
            for kind, share in profile["work_percent"].items():
                print(f"  {share:5.1f}%  {kind}")


# -- command line --------------------------------------------------------------------------


def _interval(text: str) -> str:
    """argparse type: a Spark interval (`1 second`), passed on as written."""
    try:
        if interval_seconds(text) < 0:
            raise ValueError(f"{text!r} is negative")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _rate(text: str) -> int:
    """argparse type: events per second, a whole number above zero (`5000`, `2e4`)."""
    try:
        rate = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a rate above zero")
    return rate


def _rates(text: str) -> list[int]:
    try:
        rates = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of rates (5000,10000)") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give rates above zero")
    return rates


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").strip(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start-rate", type=_rate, default=5000, help="first offered events/s")
    parser.add_argument("--factor", type=float, default=1.5, help="rate multiplier per step")
    parser.add_argument("--refine", type=int, default=2, help="bisection steps after a failure")
    parser.add_argument("--step-seconds", type=float, default=60, help="measured window")
    parser.add_argument(
        "--warm-up", type=float, default=15, help="seconds after the first commit, not measured"
    )
    parser.add_argument("--trigger-interval", type=_interval, default="1 second")
    parser.add_argument(
        "--count-trigger-interval",
        type=_interval,
        default="10 seconds",
        help="the counter's (carstream run --count-trigger-interval)",
    )
    parser.add_argument("--partitions", type=int, default=2, help="of each topic")
    parser.add_argument(
        "--no-fuse", action="store_true", help="passed on to carstream run (enrich, detect apart)"
    )
    parser.add_argument(
        "--run-args",
        default="",
        help="more flags for carstream run, e.g. \"--spark-master 'local[4]'\" (an A/B)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="JFR profile of Spark's JVM at 90%% of capacity (or the last --dry-run-steps rate)",
    )
    parser.add_argument("--max-rate", type=_rate, default=200_000, help="the search stops here")
    parser.add_argument(
        "--work-dir", type=Path, help="keep logs, state and JFR here (default: a temporary one)"
    )
    parser.add_argument(
        "--dry-run-steps",
        type=_rates,
        metavar="RATE,RATE",
        help="measure only these rates: no search, no latency at fractions",
    )
    args = parser.parse_args(argv)
    if args.factor <= 1:
        parser.error("--factor must be above 1")
    if args.step_seconds < 3 * SAMPLE_SECONDS:
        parser.error(f"--step-seconds must be at least {3 * SAMPLE_SECONDS:g}")
    return args


def fuse_setting(args: argparse.Namespace) -> bool | None:
    """True/False: fused or not; None: this carstream run has no --fuse/--no-fuse."""
    usage = subprocess.run(
        [*CARSTREAM, "run", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    if "--no-fuse" not in usage:
        return None
    return not args.no_fuse


def settings(args: argparse.Namespace, fuse: bool | None) -> dict[str, Any]:
    return {
        "trigger_interval": args.trigger_interval,
        "count_trigger_interval": args.count_trigger_interval,
        "run_args": args.run_args,
        "partitions": args.partitions,
        "fuse": fuse,
        "step_seconds": args.step_seconds,
        "warm_up_seconds": args.warm_up,
        "sample_seconds": SAMPLE_SECONDS,
        "start_rate": args.start_rate,
        "factor": args.factor,
        "refine": args.refine,
        "max_rate": args.max_rate,
        "dry_run_steps": args.dry_run_steps,
        "profile": args.profile,
        "criteria": {
            "offered_min_fraction": OFFERED_MIN_FRACTION,
            "max_backlog_slope_fraction_per_second": MAX_SLOPE_FRACTION,
            "final_backlog_limit": f"rate x (trigger interval + {FINAL_BACKLOG_SLACK_SECONDS:g} s)",
        },
    }


def run(bench: Bench, fuse: bool | None) -> dict[str, Any]:
    """The steps (a search, or --dry-run-steps) and the result document."""
    args = bench.args
    result: dict[str, Any] = {"settings": settings(args, fuse)}
    if args.dry_run_steps:
        last = len(args.dry_run_steps) - 1
        for index, rate in enumerate(args.dry_run_steps):
            measure(bench, rate, "dry run", profile=args.profile and index == last)
        sustained = [step["rate_offered"] for step in bench.steps if step.get("sustained")]
        result["highest_sustained_events_per_second"] = max(sustained, default=None)
    else:
        result.update(search(bench))
        best = result["highest_sustained_events_per_second"]
        if best is not None:
            result["latency_at_fraction"] = at_fractions(bench, best)
    result["steps"] = bench.steps
    profiled = [step["profile"] for step in bench.steps if "profile" in step]
    result["profile"] = profiled[-1] if profiled else None
    return result


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        print(f"--work-dir {args.work_dir} is not empty: give a new folder", file=sys.stderr)
        return 2
    fuse = fuse_setting(args)
    if args.no_fuse and fuse is None:
        print("this carstream run has no --no-fuse", file=sys.stderr)
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="carstream-capacity-"))
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # the finally blocks stop the runs and broker
    try:
        with EmbeddedBroker(work / "kafka", heap=BROKER_HEAP) as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            longest = max(
                map(interval_seconds, (args.trigger_interval, args.count_trigger_interval))
            )
            bench = Bench(args, kafka, work, longest)
            result = run(bench, fuse)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    path = write_result("capacity", result)
    print_summary(result)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
