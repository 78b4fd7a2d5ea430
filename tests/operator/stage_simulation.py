"""A stage and its applications in memory, driven through `decide_stage` step by step.

The unit tests play the API server (apply the plan: create, delete, store the status) and
spark-operator (set an application's state) around the pure decision function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from carstream_operator import stage_decisions as sd
from carstream_operator.model import ApplicationView, StageSpec, StageStatus
from carstream_operator.wake import BacklogView

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DESIRED_HASH = "hash-1"


def stage_spec(**overrides: Any) -> StageSpec:
    data: dict[str, Any] = {
        "pipeline": "demo",
        "stage": "enrich",
        "job": "enrich",
        "image": "carstream:test",
        "kafka": {"bootstrapServers": "kafka:9092"},
        "storage": {"warehouse": "s3a://bucket/data", "checkpointRoot": "s3a://bucket/ck"},
    }
    data.update(overrides)
    return StageSpec.from_dict(data)


@dataclass
class SimulatedStage:
    spec: StageSpec
    now: datetime = T0
    status: StageStatus = field(default_factory=StageStatus)
    applications: dict[str, ApplicationView] = field(default_factory=dict)
    dependencies: dict[str, bool] = field(default_factory=dict)
    desired_hash: str = DESIRED_HASH
    generation: int = 1
    name: str = "demo-enrich"
    plans: list[sd.StagePlan] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # The termination message of each application's driver pod, by application name.
    driver_messages: dict[str, str] = field(default_factory=dict)
    # What the handler reads of the input topic when the decision needs it (spec.wake).
    backlog: BacklogView | None = None
    backlog_error: str | None = None
    backlog_reads: int = 0

    def step(self) -> sd.StagePlan:
        """One reconcile: decide, then apply the plan as the handler would."""
        observation = sd.StageObservation(
            name=self.name,
            generation=self.generation,
            spec=self.spec,
            status=self.status,
            applications=tuple(self._with_driver_messages()),
            dependencies=dict(self.dependencies)
            if sd.dependencies_needed(self.spec, self.status)
            else None,
            desired_spec_hash=self.desired_hash,
            **self._backlog(),
        )
        plan = sd.decide_stage(observation, self.now)
        if plan.create is not None:
            assert plan.create.name not in self.applications, "created twice"
            live = [app for app in self.applications.values() if not app.deleting]
            assert not live, f"{plan.create.name} created while {live} exist"
            self.applications[plan.create.name] = ApplicationView(
                name=plan.create.name,
                run=plan.create.run,
                restarts=plan.create.restarts,
                spec_hash=self.desired_hash,
                state="",
                error_message="",
                created=self.now,
                deleting=False,
            )
            self.created.append(plan.create.name)
        for deletion in plan.delete:
            if self.applications.pop(deletion.name, None) is not None:
                self.deleted.append(deletion.name)
        self.status = plan.status
        self.plans.append(plan)
        return plan

    def _backlog(self) -> dict[str, Any]:
        if not sd.backlog_needed(self.spec, self.status):
            return {}
        self.backlog_reads += 1
        if self.backlog_error is not None:
            return {"backlog_error": self.backlog_error}
        return {"backlog": self.backlog or BacklogView(0, None)}

    def _with_driver_messages(self) -> list[ApplicationView]:
        """The applications as the handler hands them over: the driver's termination message
        read only when the decision needs it."""
        return [
            dataclasses.replace(app, driver_message=self.driver_messages.get(app.name, ""))
            if sd.driver_message_needed(self.status, app)
            else app
            for app in self.applications.values()
        ]

    def settle(self, steps: int = 5) -> sd.StagePlan:
        """Reconcile until nothing changes (as the watch events would cause)."""
        plan = self.step()
        for _ in range(steps):
            before = (self.status, tuple(self.applications))
            plan = self.step()
            if (self.status, tuple(self.applications)) == before and plan.create is None:
                break
        return plan

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def current(self) -> ApplicationView:
        live = [app for app in self.applications.values() if not app.deleting]
        assert len(live) == 1, f"expected one application, found {live}"
        return live[0]

    def set_state(self, state: str, error: str = "", driver_message: str = "") -> None:
        """What spark-operator records (its driver pod once submitted), and what the driver's
        container left as its termination message."""
        app = self.current()
        pod = "" if state == "SUBMISSION_FAILED" else f"{app.name}-driver"
        self.applications[app.name] = dataclasses.replace(
            app, state=state, error_message=error, driver_pod=pod
        )
        self.driver_messages[app.name] = driver_message

    def vanish(self) -> None:
        del self.applications[self.current().name]

    def events(self) -> list[tuple[str, str]]:
        return [(event.type, event.reason) for plan in self.plans for event in plan.events]
