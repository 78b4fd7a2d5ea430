"""Serverless streaming: a stage that sleeps while its input topic is quiet.

`spec.wake` (availableNow stages, or processingTime stages that stop when idle) makes the
operator look at the stage's backlog every `checkSeconds` (backlog module) while no
application runs, and start a run when the backlog holds `minRecords` records or its oldest
record has waited `maxDelaySeconds`. `spec.idleStopSeconds` makes a processingTime stage stop
itself after that long without input; its application completes and the stage goes Idle.

The decisions here are plain functions of what was observed; stage_decisions calls them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# Why a run was started (status.wake.lastReason, the WokeUp Event, the wakes metric).
BACKLOG = "Backlog"
MAX_DELAY = "MaxDelay"
SCHEDULE = "Schedule"
WAKE_REASONS = (BACKLOG, MAX_DELAY, SCHEDULE)

DEFAULT_MIN_RECORDS = 1000
DEFAULT_MAX_DELAY_SECONDS = 300
DEFAULT_CHECK_SECONDS = 10


@dataclass(frozen=True)
class WakePolicy:
    min_records: int = DEFAULT_MIN_RECORDS
    max_delay_seconds: int = DEFAULT_MAX_DELAY_SECONDS
    check_seconds: int = DEFAULT_CHECK_SECONDS

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> WakePolicy | None:
        if data is None:
            return None
        return cls(
            min_records=int(data.get("minRecords", DEFAULT_MIN_RECORDS)),
            max_delay_seconds=int(data.get("maxDelaySeconds", DEFAULT_MAX_DELAY_SECONDS)),
            check_seconds=int(data.get("checkSeconds", DEFAULT_CHECK_SECONDS)),
        )


@dataclass(frozen=True)
class BacklogView:
    """One look at the stage's input: unprocessed records, the oldest one's age, and the
    topic's end offsets then (`topic/partition` keys)."""

    records: int
    oldest_age_seconds: float | None
    end_offsets: Mapping[str, int] = field(default_factory=dict)


def wake_reason(policy: WakePolicy, backlog: BacklogView) -> str | None:
    if backlog.records <= 0:
        return None
    if backlog.records >= policy.min_records:
        return BACKLOG
    age = backlog.oldest_age_seconds
    if age is not None and age >= policy.max_delay_seconds:
        return MAX_DELAY
    return None


# The longest wait between two tries when Kafka cannot be read.
MAX_RETRY_SECONDS = 300.0


def retry_seconds(policy: WakePolicy, failures: int) -> float:
    """Wait after FAILURES reads in a row failed: checkSeconds doubled each time, capped."""
    return float(min(policy.check_seconds * 2 ** max(failures - 1, 0), MAX_RETRY_SECONDS))


def next_check(policy: WakePolicy, backlog: BacklogView | None, now: datetime) -> datetime:
    """When to look again: after checkSeconds, or sooner when the oldest record reaches
    maxDelaySeconds before that. A record already past it (its wake waits for an application
    being deleted, or for a schedule's next tick) is looked at again at the usual pace."""
    wait = float(policy.check_seconds)
    age = backlog.oldest_age_seconds if backlog is not None and backlog.records > 0 else None
    if age is not None and age < policy.max_delay_seconds:
        wait = min(wait, policy.max_delay_seconds - age)
    return now + timedelta(seconds=wait)


@dataclass(frozen=True)
class Look:
    """What one look at the backlog decides: the new status, a reason to wake, the next look."""

    status: WakeStatus
    reason: str | None
    next_look: datetime


def look(
    policy: WakePolicy,
    known: WakeStatus,
    backlog: BacklogView | None,
    error: str | None,
    now: datetime,
) -> Look:
    """BACKLOG as read now, or the ERROR that kept it from being read (then no wake, and the
    next look backs off)."""
    if error is not None:
        failures = known.backlog_failures + 1
        failed = known.replace(backlog_error=error, backlog_failures=failures)
        return Look(failed, None, now + timedelta(seconds=retry_seconds(policy, failures)))
    if backlog is None:
        return Look(known, None, now + timedelta(seconds=policy.check_seconds))
    return Look(
        known.looked(backlog, now), wake_reason(policy, backlog), next_check(policy, backlog, now)
    )


def backlog_condition(policy: WakePolicy, known: WakeStatus) -> tuple[str, bool, str, str]:
    """The condition BacklogKnown (type, true?, reason, message): can the backlog be read."""
    if known.backlog_error:
        retry = retry_seconds(policy, known.backlog_failures)
        return (
            "BacklogKnown",
            False,
            "KafkaUnavailable",
            f"cannot read the backlog ({known.backlog_error}): no run is started or stopped "
            f"for it; next try in {retry:g}s",
        )
    if known.backlog_records is None:
        return ("BacklogKnown", False, "NotRead", "the backlog has not been read yet")
    age = known.backlog_oldest_age_seconds
    oldest = f", the oldest waiting {age:.0f}s" if age is not None else ""
    return ("BacklogKnown", True, "Read", f"{known.backlog_records} records{oldest}")


def woke_message(reason: str, backlog: BacklogView | None, application: str) -> str:
    """The WokeUp Event's message."""
    seen = ""
    if backlog is not None and backlog.records:
        age = backlog.oldest_age_seconds
        seen = f": {backlog.records} records waiting" + (
            f", the oldest for {age:.0f}s" if age is not None else ""
        )
    return f"{reason}{seen}; started {application}"


@dataclass(frozen=True)
class WakeStatus:
    """status.backlog and status.wake of a stage with spec.wake."""

    # The last look at the backlog: records, oldest age, when; None before the first look.
    backlog_records: int | None = None
    backlog_oldest_age_seconds: float | None = None
    backlog_time: datetime | None = None
    # Why the backlog could not be read the last time (Kafka unreachable...); "" when it was.
    backlog_error: str = ""
    backlog_failures: int = 0
    last_reason: str = ""
    last_time: datetime | None = None
    # The topic's end offsets when the current run started; once it succeeds, what it has
    # processed at least (the floor of backlog.processed_offsets).
    run_offsets: Mapping[str, int] = field(default_factory=dict)
    drained_offsets: Mapping[str, int] = field(default_factory=dict)

    def replace(self, **changes: Any) -> WakeStatus:
        return dataclasses.replace(self, **changes)

    def looked(self, backlog: BacklogView, now: datetime) -> WakeStatus:
        return self.replace(
            backlog_records=backlog.records,
            backlog_oldest_age_seconds=backlog.oldest_age_seconds,
            backlog_time=now,
            backlog_error="",
            backlog_failures=0,
        )

    def woke(self, reason: str, now: datetime, backlog: BacklogView | None) -> WakeStatus:
        return self.replace(
            last_reason=reason,
            last_time=now,
            run_offsets=dict(backlog.end_offsets) if backlog is not None else {},
        )

    def drained(self) -> WakeStatus:
        """The current run succeeded: everything up to its start offsets is processed."""
        if not self.run_offsets:
            return self
        merged = dict(self.drained_offsets)
        for key, offset in self.run_offsets.items():
            merged[key] = max(merged.get(key, offset), offset)
        return self.replace(drained_offsets=merged, run_offsets={})

    @property
    def empty(self) -> bool:
        return self == WakeStatus()

    @classmethod
    def from_status(cls, data: Mapping[str, Any], parse_time: Any) -> WakeStatus:
        backlog = data.get("backlog") or {}
        wake = data.get("wake") or {}
        return cls(
            backlog_records=backlog.get("records"),
            backlog_oldest_age_seconds=backlog.get("oldestRecordAgeSeconds"),
            backlog_time=parse_time(backlog.get("checkTime")),
            backlog_error=backlog.get("error") or "",
            backlog_failures=int(backlog.get("failures") or 0),
            last_reason=wake.get("lastReason", ""),
            last_time=parse_time(wake.get("lastTime")),
            run_offsets=_offsets(wake.get("runOffsets")),
            drained_offsets=_offsets(wake.get("drainedOffsets")),
        )

    def to_status(self, format_time: Callable[[datetime | None], str | None]) -> dict[str, Any]:
        """status.backlog and status.wake; null (cleared by a merge patch) when unused."""
        if self.empty:
            return {"backlog": None, "wake": None}
        backlog = {
            "records": self.backlog_records,
            "oldestRecordAgeSeconds": self.backlog_oldest_age_seconds,
            "checkTime": format_time(self.backlog_time),
            "error": self.backlog_error or None,
            "failures": self.backlog_failures or None,
        }
        wake = {
            "lastReason": self.last_reason or None,
            "lastTime": format_time(self.last_time),
            # lists, which a merge patch replaces whole (it would merge maps, keeping partitions)
            "runOffsets": _offset_list(self.run_offsets),
            "drainedOffsets": _offset_list(self.drained_offsets),
        }
        return {"backlog": backlog, "wake": wake}


def _offset_list(offsets: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"partition": key, "offset": offsets[key]} for key in sorted(offsets)]


def _offsets(data: Any) -> dict[str, int]:
    """[{partition: 'topic/0', offset: 5}, ...] -> {'topic/0': 5}; anything else is skipped."""
    offsets: dict[str, int] = {}
    for item in data if isinstance(data, list) else ():
        if isinstance(item, Mapping) and isinstance(item.get("offset"), int):
            offsets[str(item.get("partition"))] = item["offset"]
    return offsets
