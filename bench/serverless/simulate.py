"""A stream under a bursty load, run three ways, in simulated time: the operator's own decision
function (stage_decisions.decide_stage) decides when runs start and end, a model of a Spark
stage says how long they take (costs measured by bench_serverless.py), and every event's
latency and every pod's lifetime are counted.

The model, one streaming stage standing for the pipeline:
- a run (a SparkApplication) has `pods` pods (driver and executors) from its creation until
  it ends; it starts its query `start_seconds` after creation (operator, spark-operator, pod
  start, JVM and Spark session), then an availableNow run reads what had arrived by then, in
  `run_overhead_seconds` plus one second per `rate` events, and ends;
- always on: the same pods for the whole time, a micro-batch every `trigger_seconds` (when the
  previous one is done) over what has arrived, `batch_overhead_seconds` plus events / rate;
- an event's latency is from its arrival in Kafka to the end of the batch that processed it;
- bursts arrive for `hours`; the simulation goes on until every event is processed, and the
  pod-seconds of that overtime count too (per hour of arrivals).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from carstream_operator import stage_decisions as sd
from carstream_operator.model import SPARK_COMPLETED, ApplicationView, StageSpec, StageStatus
from carstream_operator.wake import BacklogView

T0 = datetime(2026, 1, 5, 0, 0, 0, tzinfo=UTC)  # a Monday, midnight: cron ticks on the hour
SPEC_HASH = "simulated"
RESYNC_SECONDS = 60.0  # the operator's default resync: a reconcile at least this often
STEP_SECONDS = 0.25
OVERTIME_SECONDS = 6 * 3600.0  # the longest a policy may take to process the last burst


@dataclass(frozen=True)
class Load:
    burst_events: int = 5000
    period_seconds: float = 600.0
    burst_seconds: float = 10.0  # each burst arrives evenly over this long
    first_burst_seconds: float = 37.0  # off the cron ticks, as a real load would be
    hours: float = 6.0

    def arrivals(self) -> list[float]:
        times: list[float] = []
        start = self.first_burst_seconds
        end = self.hours * 3600
        while start < end:
            step = self.burst_seconds / self.burst_events
            times.extend(start + index * step for index in range(self.burst_events))
            start += self.period_seconds
        return times


@dataclass(frozen=True)
class Costs:
    start_seconds: float
    run_overhead_seconds: float
    batch_overhead_seconds: float
    rate: float
    pods: int = 2
    trigger_seconds: float = 5.0


@dataclass
class Outcome:
    policy: str
    pod_seconds: float
    latencies: list[float] = field(default_factory=list)
    runs: int = 0

    def summary(self, hours: float) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "pod_seconds_per_hour": round(self.pod_seconds / hours),
            "runs_per_hour": round(self.runs / hours, 2),
            "latency_p50_seconds": round(percentile(self.latencies, 0.50), 1),
            "latency_p99_seconds": round(percentile(self.latencies, 0.99), 1),
            "events": len(self.latencies),
        }


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def always_on(load: Load, costs: Costs) -> Outcome:
    arrivals = load.arrivals()
    end = load.hours * 3600
    outcome = Outcome("always on (processingTime)", pod_seconds=costs.pods * end)
    done, trigger = 0, 0.0
    while trigger < end or done < len(arrivals):
        arrived = bisect.bisect_right(arrivals, trigger)
        finished = trigger + costs.batch_overhead_seconds + (arrived - done) / costs.rate
        if arrived > done:
            outcome.latencies.extend(finished - arrivals[i] for i in range(done, arrived))
            done = arrived
        # the next trigger: the next interval boundary once this batch is over
        trigger = math.floor(finished / costs.trigger_seconds + 1) * costs.trigger_seconds
    return outcome


@dataclass
class _Run:
    name: str
    run: int
    created: float
    starts: float  # its query starts: it takes what had arrived by then
    target: int = -1
    ends: float = math.inf
    state: str = ""


def with_runs(policy: str, spec: StageSpec, load: Load, costs: Costs) -> Outcome:
    """A stage whose runs the operator starts (schedule or wake), reconciled as the operator
    would: when a requeue is due, when an application changes state, at least every minute."""
    arrivals = load.arrivals()
    end = load.hours * 3600
    outcome = Outcome(policy, pod_seconds=0.0)
    status, current = StageStatus(), None
    done, now, next_reconcile = 0, 0.0, 0.0
    # past the last arrival until every event is processed (its pods counted too)
    while now < end or (done < len(arrivals) and now < end + OVERTIME_SECONDS):
        changed = False
        if current is not None and current.state == "" and now >= current.starts:
            current.state = "RUNNING"
            current.target = bisect.bisect_right(arrivals, now)
            work = costs.run_overhead_seconds + (current.target - done) / costs.rate
            current.ends = now + work
            changed = True
        if current is not None and current.state == "RUNNING" and now >= current.ends:
            current.state = SPARK_COMPLETED
            outcome.latencies.extend(now - arrivals[i] for i in range(done, current.target))
            done = current.target
            outcome.pod_seconds += costs.pods * (now - current.created)
            changed = True
        if changed or now >= next_reconcile:
            observation = _observation(spec, status, current, arrivals, done, now)
            plan = sd.decide_stage(observation, _at(now))
            status = plan.status
            if plan.delete and current is not None and current.state == SPARK_COMPLETED:
                current = None
            if plan.create is not None:
                current = _Run(plan.create.name, plan.create.run, now, now + costs.start_seconds)
                outcome.runs += 1
            wait = plan.requeue_after if plan.requeue_after is not None else RESYNC_SECONDS
            next_reconcile = now + min(wait, RESYNC_SECONDS)
        now += STEP_SECONDS
    return outcome


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _observation(
    spec: StageSpec,
    status: StageStatus,
    current: _Run | None,
    arrivals: list[float],
    done: int,
    now: float,
) -> sd.StageObservation:
    applications: tuple[ApplicationView, ...] = ()
    if current is not None:
        applications = (
            ApplicationView(
                name=current.name,
                run=current.run,
                restarts=0,
                spec_hash=SPEC_HASH,
                state=current.state,
                error_message="",
                created=_at(current.created),
                deleting=False,
            ),
        )
    backlog = None
    if sd.backlog_needed(spec, status):
        arrived = bisect.bisect_right(arrivals, now)
        oldest = now - arrivals[done] if arrived > done else None
        backlog = BacklogView(arrived - done, oldest, {"sensors/0": arrived})
    return sd.StageObservation(
        name="bench-enrich",
        generation=1,
        spec=spec,
        status=status,
        applications=applications,
        dependencies=None,
        desired_spec_hash=SPEC_HASH,
        backlog=backlog,
    )
