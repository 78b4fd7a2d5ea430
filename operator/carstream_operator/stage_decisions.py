"""What a PipelineStage should do next: a plain function of what is observed and the time.

`decide_stage(observation, now)` returns a `StagePlan`: the application to create (if any),
the applications to delete, the new status, the Events to post and when to look again. It
reads nothing and writes nothing; the kopf handlers do that around it.

The phase state machine (status.phase):

    Pending ──deps ready──▶ Starting ──RUNNING──▶ Running ──COMPLETED──▶ Succeeded
       │                      │  ▲                  │
       │ (scheduled)          │  └──backoff over──┐ │ FAILED / vanished / start deadline
       ▼                      ▼                   │ ▼
    Scheduled ◀──run over── (same)             BackingOff ──maxRestarts──▶ Failed
    any ──suspend──▶ Suspended ──resume──▶ Pending ...      spec change: Stopping ──▶ Starting

Applications are created with the next run number in their name, so creating one twice
fails with AlreadyExists instead of running twice; the run number and the restart count are
also annotations of the application, so status lost in a crash is taken back from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from croniter import croniter

from carstream_operator import driver_failure, wake
from carstream_operator import resources as r
from carstream_operator.model import (
    SPARK_COMPLETED,
    SPARK_FAILED_STATES,
    SPARK_RUNNING_STATES,
    ApplicationView,
    StageSpec,
    StageStatus,
    updated_conditions,
)

PENDING = "Pending"
STARTING = "Starting"
RUNNING = "Running"
BACKING_OFF = "BackingOff"
STOPPING = "Stopping"
SCHEDULED = "Scheduled"
IDLE = "Idle"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
STAGE_PHASES = (
    PENDING,
    STARTING,
    RUNNING,
    BACKING_OFF,
    STOPPING,
    SCHEDULED,
    IDLE,
    SUSPENDED,
    SUCCEEDED,
    FAILED,
)

# Phases in which the stage's current run is live: an application exists or is wanted.
LIVE_PHASES = frozenset({STARTING, RUNNING})
# Phases without an application, waiting for a tick (schedule) or a backlog (wake).
WAITING_PHASES = frozenset({SCHEDULED, IDLE})
WARNING_PHASES = frozenset({BACKING_OFF, FAILED})

# Outcomes, counted by the metrics.
RESTART = "restart"
TIME_LIMIT = "time-limit"
START_DEADLINE = "start-deadline"
GAVE_UP = "gave-up"
WAKE_OUTCOME = "wake-"  # + the wake reason


@dataclass(frozen=True)
class StageObservation:
    """Everything `decide_stage` looks at."""

    name: str
    generation: int
    spec: StageSpec
    status: StageStatus
    applications: tuple[ApplicationView, ...]
    # Readiness of the stages in spec.depends_on; None when it was not looked up.
    dependencies: Mapping[str, bool] | None
    # Hash of the application spec the current spec gives (builders.application_spec_hash).
    desired_spec_hash: str
    # The backlog of the stage's input topic (spec.wake), read for this decision
    # (backlog_needed); or why it could not be read.
    backlog: wake.BacklogView | None = None
    backlog_error: str | None = None


@dataclass(frozen=True)
class CreateApplication:
    name: str
    run: int
    restarts: int


@dataclass(frozen=True)
class DeleteApplication:
    name: str
    reason: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StagePlan:
    status: StageStatus
    create: CreateApplication | None = None
    delete: tuple[DeleteApplication, ...] = ()
    events: tuple[Event, ...] = ()
    outcomes: tuple[str, ...] = ()
    # Seconds until something is due (a backoff, a deadline, a tick); None: nothing timed.
    requeue_after: float | None = None


def dependencies_needed(spec: StageSpec, status: StageStatus) -> bool:
    """Whether `decide_stage` needs the readiness of the stage's dependencies."""
    return bool(spec.depends_on) and not spec.suspend and not _started(status)


def backlog_needed(spec: StageSpec, status: StageStatus) -> bool:
    """Whether `decide_stage` needs the backlog of the stage's input topic: a stage with
    spec.wake that is not suspended, has not given up and has no live application."""
    if spec.wake is None or spec.suspend:
        return False
    if status.phase == FAILED and not spec.schedule:
        return False  # gave up: nothing wakes it but a new spec
    return status.phase not in LIVE_PHASES | {BACKING_OFF, STOPPING}


def driver_message_needed(status: StageStatus, app: ApplicationView) -> bool:
    """Whether `decide_stage` needs the termination message of `app`'s driver (the handler
    reads the driver pod): the application failed and the stage has not recorded it yet."""
    failed = app.state in SPARK_FAILED_STATES and bool(app.driver_pod) and not app.deleting
    unrecorded = app.run > status.run or (app.run == status.run and status.phase in LIVE_PHASES)
    return failed and unrecorded


def application_failure(app: ApplicationView) -> tuple[str, str]:
    """The reason and message of a failed application. The driver's own reason when its
    termination message gives one (e.g. KafkaAuthenticationFailed); else SubmissionFailed or
    ApplicationFailed with spark-operator's error and the last line the driver logged."""
    driver = driver_failure.parse(app.driver_message)
    if driver is not None:
        return driver.reason, f"{app.name} {app.state}: {driver.message}"
    reason = "SubmissionFailed" if app.state == "SUBMISSION_FAILED" else "ApplicationFailed"
    details = [app.error_message, driver_failure.last_line(app.driver_message)]
    detail = "; ".join(item for item in details if item)
    return reason, f"{app.name} {app.state}: {detail}" if detail else f"{app.name} {app.state}"


def next_tick(schedule: str, after: datetime) -> datetime:
    """The first time of a cron schedule strictly after `after` (seconds as a 6th field)."""
    result: datetime = croniter(schedule, after).get_next(datetime)
    return result


def decide_stage(observation: StageObservation, now: datetime) -> StagePlan:
    return _Decision(observation, now).decide()


def application_rejected(
    observation: StageObservation, plan: StagePlan, message: str, now: datetime
) -> StagePlan:
    """The API server refused the application of `plan`: the stage fails until its spec
    changes (nothing is retried: the same spec would be refused again)."""
    before = observation.status
    decision = _Decision(observation, now)
    decision.status = plan.status.replace(
        phase=FAILED,
        reason="InvalidApplication",
        message=message,
        run=before.run,
        application=before.application,
        application_state=before.application_state,
    )
    decision._finish_status(before)
    return StagePlan(status=decision.status, delete=plan.delete, events=tuple(decision.events))


def _started(status: StageStatus) -> bool:
    return status.run > 0 or status.next_run_time is not None


@dataclass
class _Decision:
    observation: StageObservation
    now: datetime
    status: StageStatus = field(init=False)
    create: CreateApplication | None = None
    delete: list[DeleteApplication] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    due: list[datetime] = field(default_factory=list)
    current: ApplicationView | None = None
    # Applications other than the current one that still exist (being deleted or stale).
    leftovers: bool = False

    def __post_init__(self) -> None:
        self.status = self.observation.status
        self.spec = self.observation.spec

    # -- entry -----------------------------------------------------------------------------

    def decide(self) -> StagePlan:
        before = self.status
        self._sort_applications()
        self._step()
        self._finish_status(before)
        requeue = None
        if self.due:
            requeue = max((min(self.due) - self.now).total_seconds(), 0.0)
        return StagePlan(
            status=self.status,
            create=self.create,
            delete=tuple(self.delete),
            events=tuple(self.events),
            outcomes=tuple(self.outcomes),
            requeue_after=requeue,
        )

    def _step(self) -> None:
        spec = self.spec
        if spec.suspend:
            self._suspend()
            return
        if self.status.phase == SUSPENDED:
            self._resume()
        if spec.schedule and not self._schedule_valid(spec.schedule):
            return
        if not _started(self.status):
            if (
                self.status.phase == FAILED
                and self.status.spec_hash == self.observation.desired_spec_hash
            ):
                return  # its first application was refused: only a new spec can help
            if not self._dependencies_ready():
                return
            if self._sleeps:
                self._wait_for_run()
            else:
                self._start_run(restarts=0, reason="Created", new_activation=True)
            return
        if self._sleeps:
            self._scheduled_step()
        else:
            self._run_step()

    @property
    def _sleeps(self) -> bool:
        """No application between runs: runs start on a schedule's ticks or on backlog."""
        return bool(self.spec.schedule or self.spec.wake)

    @property
    def _waiting_phase(self) -> str:
        return IDLE if self.spec.wake else SCHEDULED

    # -- applications ----------------------------------------------------------------------

    def _sort_applications(self) -> None:
        """Pick the current application; adopt it if the status lost it; drop the others."""
        live = [app for app in self.observation.applications if not app.deleting]
        self.leftovers = any(app.deleting for app in self.observation.applications)
        latest = max(live, key=lambda app: app.run, default=None)
        for app in live:
            if app is not latest or app.run < self.status.run:
                self._delete(app, "Superseded")
        if latest is None or latest.run < self.status.run:
            return
        self.current = latest
        if latest.run > self.status.run:
            self._adopt(latest)

    def _adopt(self, app: ApplicationView) -> None:
        """The operator created `app` but stopped before recording it: record it now."""
        status = self.status
        self.status = status.replace(
            phase=STARTING,
            reason="Adopted",
            message=f"recorded SparkApplication {app.name} created before a restart",
            run=app.run,
            application=app.name,
            restarts=app.restarts,
            spec_hash=app.spec_hash,
            start_time=status.start_time or app.created or self.now,
            running_since=None,
            next_restart_time=None,
        )

    def _delete(self, app: ApplicationView, reason: str) -> None:
        if not any(planned.name == app.name for planned in self.delete):
            self.delete.append(DeleteApplication(app.name, reason))
        self.leftovers = True

    def _delete_current(self, reason: str) -> None:
        if self.current is not None:
            self._delete(self.current, reason)
            self.current = None

    # -- suspend / resume ------------------------------------------------------------------

    def _suspend(self) -> None:
        if self.status.phase == SUCCEEDED and not self.spec.schedule:
            return
        if self.current is not None and self.current.state not in (
            SPARK_FAILED_STATES | {SPARK_COMPLETED}
        ):
            self._delete_current("Suspended")
        self.status = self.status.replace(
            phase=SUSPENDED,
            reason="Suspended",
            message="suspended: no application runs; checkpoints are kept",
            next_restart_time=None,
            next_run_time=None,
            running_since=None,
        )

    def _resume(self) -> None:
        self.status = self.status.replace(
            phase=PENDING,
            reason="Resumed",
            message="resumed",
            restarts=0,
            start_time=None,
            next_run_time=None,
        )

    # -- dependencies ----------------------------------------------------------------------

    def _dependencies_ready(self) -> bool:
        depends_on = self.spec.depends_on
        known = self.observation.dependencies or {}
        waiting = [name for name in depends_on if not known.get(name, False)]
        if not waiting:
            return True
        self.status = self.status.replace(
            phase=PENDING,
            reason="WaitingForDependencies",
            message=f"waiting for {', '.join(waiting)} to be ready",
        )
        return False

    # -- scheduled stages ------------------------------------------------------------------

    def _schedule_valid(self, schedule: str) -> bool:
        try:
            next_tick(schedule, self.now)
        except (ValueError, KeyError, ArithmeticError) as error:
            self._delete_current("InvalidSchedule")
            self.status = self.status.replace(
                phase=FAILED,
                reason="InvalidSchedule",
                message=f"schedule {schedule!r}: {error}",
                next_run_time=None,
            )
            return False
        return True

    def _tick_after(self, moment: datetime) -> datetime:
        assert self.spec.schedule is not None
        return next_tick(self.spec.schedule, moment)

    def _wait_for_run(self) -> None:
        status = self.status
        if status.phase != self._waiting_phase:
            status = status.replace(phase=self._waiting_phase, **self._waiting_reason_and_message())
        next_run = None
        if self.spec.schedule:
            next_run = status.next_run_time or self._tick_after(self.now)
            status = status.replace(next_run_time=next_run)
            self.due.append(next_run)
        self.status = status
        reason = self._look_at_backlog()
        if next_run is not None and self.now >= next_run:
            reason = wake.SCHEDULE
        if reason is None or self.leftovers:
            return
        if next_run is not None and self.now >= next_run:
            self.status = self.status.replace(next_run_time=self._tick_after(self.now))
        self._wake(reason)

    def _waiting_reason_and_message(self) -> dict[str, str]:
        policy = self.spec.wake
        if policy is None:
            return {"reason": "Scheduled", "message": "waiting for the next run"}
        message = (
            f"no application: a run starts at {policy.min_records} unprocessed records or "
            f"when the oldest has waited {policy.max_delay_seconds}s"
        )
        if self.spec.schedule:
            message += ", or at the next scheduled run"
        return {"reason": "WaitingForBacklog", "message": message}

    def _look_at_backlog(self) -> str | None:
        """Records what the handler read of the backlog; the reason to wake now, if any."""
        policy = self.spec.wake
        if policy is None:
            return None
        observed = self.observation
        seen = wake.look(
            policy, self.status.wake, observed.backlog, observed.backlog_error, self.now
        )
        self.status = self.status.replace(wake=seen.status)
        self.due.append(seen.next_look)
        if self.status.reason == "RunFailed":
            return None  # a scheduled run gave up on this backlog: the next tick tries again
        return seen.reason

    def _wake(self, reason: str) -> None:
        self._start_run(restarts=0, reason="RunStarted", new_activation=True)
        if self.spec.wake is None:
            return
        backlog = self.observation.backlog
        self.status = self.status.replace(wake=self.status.wake.woke(reason, self.now, backlog))
        message = wake.woke_message(reason, backlog, self.status.application)
        self.events.append(Event("Normal", "WokeUp", message))
        self.outcomes.append(WAKE_OUTCOME + reason)

    def _scheduled_step(self) -> None:
        phase = self.status.phase
        if phase == FAILED and not self.spec.schedule:
            # A sleeper that gave up: its backlog would wake it at once, again and again;
            # only a new spec (or suspend and resume) starts it again.
            self._run_step()
            return
        if phase in (*WAITING_PHASES, SUCCEEDED, FAILED, PENDING, "") and self.current is None:
            self._wait_for_run()
            return
        if phase in (*WAITING_PHASES, SUCCEEDED, FAILED) and self.current is not None:
            # A finished run whose deletion did not happen yet.
            self._delete_current("RunFinished")
            self._wait_for_run()
            return
        next_run = self.status.next_run_time
        if next_run is not None and self.now >= next_run and self.status.reason == "Adopted":
            # The tick of the run the operator created just before it stopped.
            self.status = self.status.replace(next_run_time=self._tick_after(self.now))
        elif next_run is not None and self.now >= next_run:
            following = self._tick_after(self.now)
            self.events.append(
                Event(
                    "Normal",
                    "RunSkipped",
                    f"the run due at {next_run.isoformat()} was skipped: the previous run is "
                    f"still going; next run at {following.isoformat()}",
                )
            )
            self.status = self.status.replace(next_run_time=following)
        if self.status.next_run_time is not None:
            self.due.append(self.status.next_run_time)
        self._run_step()

    # -- the current run -------------------------------------------------------------------

    def _run_step(self) -> None:
        status = self.status
        if status.phase in (SUCCEEDED, FAILED, IDLE):
            self._finished_step()
            return
        if self._time_limit_reached():
            return
        app = self.current
        if app is None:
            self._without_application()
            return
        self.status = status = status.replace(application_state=app.state)
        if status.phase == STOPPING:
            self._delete_current("SpecChanged")
            return
        if status.phase not in LIVE_PHASES:
            # A (re)start is due but an application is still there: a finished one goes first;
            # a live one (created by an operator that stopped before recording it) is taken on.
            if app.state == SPARK_COMPLETED or app.state in SPARK_FAILED_STATES:
                self._delete_current("Finished")
                return
            self.status = status = status.replace(phase=STARTING)
        if app.spec_hash != self.observation.desired_spec_hash and app.state not in (
            SPARK_FAILED_STATES | {SPARK_COMPLETED}
        ):
            self._delete_current("SpecChanged")
            self.status = status.replace(
                phase=STOPPING,
                reason="SpecChanged",
                message=f"stopping {app.name} to start it again with the new spec",
                running_since=None,
            )
            return
        if app.state == SPARK_COMPLETED and self._stops_when_idle:
            self._run_over(
                success=True,
                reason="IdleStopped",
                message=f"{app.name} stopped after {self.spec.idle_stop_seconds}s without "
                "input; the checkpoint keeps its position",
            )
        elif app.state == SPARK_COMPLETED:
            self._run_over(success=True, reason="Completed", message=f"{app.name} completed")
        elif app.state in SPARK_FAILED_STATES:
            self._failed(*application_failure(app))
        elif app.state in SPARK_RUNNING_STATES:
            self._running(app)
        else:
            self._starting(app)

    def _running(self, app: ApplicationView) -> None:
        status = self.status
        since = status.running_since or self.now
        restarts = status.restarts
        policy = self.spec.restart_policy
        stable_at = since + timedelta(seconds=policy.reset_after_seconds)
        if restarts and self.now >= stable_at:
            self.events.append(
                Event(
                    "Normal",
                    "RestartCountReset",
                    f"{app.name} has run for {policy.reset_after_seconds:g}s: restart count "
                    f"{restarts} reset to 0",
                )
            )
            restarts = 0
        elif restarts:
            self.due.append(stable_at)
        changed = status.phase != RUNNING
        self.status = status.replace(
            phase=RUNNING,
            reason="ApplicationRunning" if changed else status.reason,
            message=f"{app.name} is running" if changed else status.message,
            running_since=since,
            restarts=restarts,
        )

    def _starting(self, app: ApplicationView) -> None:
        created = app.created or self.status.start_time or self.now
        deadline = created + timedelta(seconds=self.spec.start_deadline_seconds)
        if self.now >= deadline:
            self._delete_current("StartDeadlineExceeded")
            self.outcomes.append(START_DEADLINE)
            self._failed(
                "StartDeadlineExceeded",
                f"{app.name} did not start running within {self.spec.start_deadline_seconds}s "
                f"(state {app.state or 'new'})",
            )
            return
        self.due.append(deadline)
        if self.status.phase != STARTING:
            self.status = self.status.replace(phase=STARTING)

    def _without_application(self) -> None:
        status = self.status
        if self.leftovers:
            # Never two applications of a stage at once: wait until the old one is gone.
            return
        if status.phase == BACKING_OFF:
            restart_at = status.next_restart_time or self.now
            if self.now >= restart_at:
                self.outcomes.append(RESTART)
                self._start_run(
                    restarts=status.restarts + 1,
                    reason="Restarting",
                    new_activation=False,
                )
            else:
                self.due.append(restart_at)
            return
        if status.phase == STOPPING:
            self._start_run(restarts=status.restarts, reason="Replaced", new_activation=False)
            return
        if status.phase in LIVE_PHASES:
            name = status.application or "the application"
            self._failed("ApplicationVanished", f"{name} was deleted by someone else")
            return
        reason = "Resumed" if status.reason == "Resumed" else "Created"
        self._start_run(restarts=status.restarts, reason=reason, new_activation=True)

    def _finished_step(self) -> None:
        """A Succeeded or Failed stage runs again only when its application spec changes."""
        if self.status.spec_hash == self.observation.desired_spec_hash:
            return
        self._delete_current("SpecChanged")
        self.status = self.status.replace(
            phase=STOPPING,
            reason="SpecChanged",
            message="the spec changed: starting a new run",
            restarts=0,
            start_time=None,
        )
        if not self.leftovers:
            self._start_run(restarts=0, reason="SpecChanged", new_activation=True)

    def _time_limit_reached(self) -> bool:
        limit = self.spec.time_limit_seconds
        start = self.status.start_time
        if limit is None or start is None:
            return False
        deadline = start + timedelta(seconds=limit)
        if self.now < deadline:
            self.due.append(deadline)
            return False
        self._delete_current("TimeLimitReached")
        self.outcomes.append(TIME_LIMIT)
        self._run_over(
            success=True,
            reason="TimeLimitReached",
            message=f"stopped at its time limit of {limit}s",
        )
        return True

    # -- transitions -----------------------------------------------------------------------

    def _start_run(self, *, restarts: int, reason: str, new_activation: bool) -> None:
        run = self.status.run + 1
        name = r.application_name(self.observation.name, run)
        self.create = CreateApplication(name=name, run=run, restarts=restarts)
        self.status = self.status.replace(
            phase=STARTING,
            reason=reason,
            message=f"created SparkApplication {name}",
            run=run,
            application=name,
            application_state="",
            restarts=restarts,
            spec_hash=self.observation.desired_spec_hash,
            start_time=self.now if new_activation else (self.status.start_time or self.now),
            running_since=None,
            next_restart_time=None,
        )
        self.due.append(self.now + timedelta(seconds=self.spec.start_deadline_seconds))

    def _failed(self, reason: str, message: str) -> None:
        """The current run failed: back off and restart, or give up."""
        status = self.status
        policy = self.spec.restart_policy
        restarts = status.restarts
        since = status.running_since
        if since is not None and self.now - since >= timedelta(seconds=policy.reset_after_seconds):
            restarts = 0
        status = status.replace(
            restarts=restarts,
            last_failure_time=self.now,
            running_since=None,
            next_restart_time=None,
        )
        if restarts >= policy.max_restarts:
            self.outcomes.append(GAVE_UP)
            # The reason of the last failure stays readable behind GaveUp.
            message = f"{reason}: {message}; gave up after {restarts} restarts"
            self.status = status
            if self.spec.schedule:
                self._run_over(success=False, reason="RunFailed", message=message)
            else:
                # The failed application stays, for its logs.
                self.status = status.replace(phase=FAILED, reason="GaveUp", message=message)
            return
        self._delete_current(reason)
        delay = policy.backoff_seconds(restarts + 1)
        restart_at = self.now + timedelta(seconds=delay)
        self.status = status.replace(
            phase=BACKING_OFF,
            reason=reason,
            message=f"{message}; restart {restarts + 1} of {policy.max_restarts} in {delay:g}s",
            next_restart_time=restart_at,
        )
        self.due.append(restart_at)

    @property
    def _stops_when_idle(self) -> bool:
        """A processingTime stage with idleStopSeconds: its application completes only when
        the stage stopped itself for want of input."""
        return self.spec.idle_stop_seconds is not None and not self.spec.runs_to_completion

    def _run_over(self, *, success: bool, reason: str, message: str) -> None:
        status = self.status.replace(
            running_since=None,
            next_restart_time=None,
            last_success_time=self.now if success else self.status.last_success_time,
            wake=self.status.wake.drained() if success else self.status.wake,
        )
        if not success:
            status = status.replace(last_failure_time=self.now)
        if self._sleeps:
            self._delete_current("RunFinished")
            self.status = status.replace(
                phase=self._waiting_phase,
                reason=reason,
                message=message,
                restarts=0,
                start_time=None,
            )
            if status.next_run_time is not None:
                self.due.append(status.next_run_time)
            if self.spec.wake is not None:
                self.due.append(self.now)  # look at the backlog again right away
            return
        done = IDLE if success and self._stops_when_idle else SUCCEEDED
        self.status = status.replace(
            phase=done if success else FAILED, reason=reason, message=message
        )

    # -- status ----------------------------------------------------------------------------

    def _finish_status(self, before: StageStatus) -> None:
        status = self.status
        ready = self._ready(status)
        progressing = status.phase in (PENDING, STARTING, STOPPING, BACKING_OFF)
        degraded = status.phase in WARNING_PHASES or (
            status.phase in WAITING_PHASES and status.reason == "RunFailed"
        )
        wanted = [
            ("Ready", ready, status.reason or status.phase, status.message),
            ("Progressing", progressing, status.reason or status.phase, status.message),
            ("Degraded", degraded, status.reason or status.phase, status.message),
        ]
        if self.spec.wake is not None:
            wanted.append(wake.backlog_condition(self.spec.wake, status.wake))
        generation = self.observation.generation
        self.status = status.replace(
            ready=ready,
            observed_generation=generation,
            conditions=updated_conditions(
                status.conditions, wanted, now=self.now, generation=generation
            ),
        )
        if status.phase != before.phase:
            kind = "Warning" if status.phase in WARNING_PHASES else "Normal"
            if status.phase in WAITING_PHASES and status.reason == "RunFailed":
                kind = "Warning"
            self.events.append(Event(kind, status.reason or status.phase, status.message))

    def _ready(self, status: StageStatus) -> bool:
        if status.phase == IDLE:
            return True  # sleeping until there is work: as good as running or succeeded
        if self.spec.runs_to_completion:
            return status.phase == SUCCEEDED or (
                self._sleeps and status.last_success_time is not None
            )
        return status.phase == RUNNING
