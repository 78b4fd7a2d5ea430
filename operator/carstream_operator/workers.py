"""One reconcile loop per Pipeline and per PipelineStage, and how events wake them.

Each object's kopf daemon runs its loop: reconcile, then sleep until the plan's next due time,
the resync interval, or a wake-up. Watch events (a SparkApplication's state, a spec change, a
dependency becoming ready) only wake loops; they never reconcile themselves, so the reconciles
of one object never overlap.

A loop keeps the object it last read or wrote: only its own loop writes a stage's status, so
that copy stays current until the spec changes (a new generation), which sets `refresh`.
Events the loop caused itself (the application it just created, ...) do not wake it.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (namespace, name)
# What a stage loop last saw of one of its applications: (state, being deleted).
ApplicationState = tuple[str, bool]


@dataclass
class Worker:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # The metadata.generation last reconciled; events of other generations wake the loop.
    generation: int | None = None
    # The object as last read or written; None or `refresh`: read it again.
    obj: dict[str, Any] | None = None
    refresh: bool = True

    async def sleep(self, seconds: float, stopped: Awaitable[Any] | None = None) -> bool:
        """Until woken, `stopped` is done (kopf stops the daemon), or `seconds` passed.
        Returns whether it was woken."""
        waits = [asyncio.ensure_future(self.wake.wait())]
        if stopped is not None:
            waits.append(asyncio.ensure_future(stopped))
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return self.wake.is_set()

    def start_reconcile(self) -> None:
        """Forget earlier wake-ups: this reconcile sees what caused them."""
        self.wake.clear()

    def remember(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.refresh = False


@dataclass
class StageWorker(Worker):
    pipeline: str = ""
    stage: str = ""
    depends_on: frozenset[str] = frozenset()
    waiting_for_dependencies: bool = True
    applications: dict[str, ApplicationState] = field(default_factory=dict)
    # status.ready as this loop last read or wrote it; None until it has read the stage.
    ready: bool | None = None

    def knows(self, application: str, state: ApplicationState) -> bool:
        return self.applications.get(application) == state


class Workers:
    def __init__(self) -> None:
        self._stages: dict[Key, StageWorker] = {}
        self._pipelines: dict[Key, Worker] = {}

    def __len__(self) -> int:
        return len(self._stages) + len(self._pipelines)

    def add_stage(
        self, namespace: str, name: str, pipeline: str, stage: str, depends_on: Iterable[str]
    ) -> StageWorker:
        """The loop of a new stage: until its first reconcile says otherwise, it waits for its
        dependencies, so one that becomes ready meanwhile wakes it."""
        worker = StageWorker(pipeline=pipeline, stage=stage, depends_on=frozenset(depends_on))
        return self._stages.setdefault((namespace, name), worker)

    def remove_stage(self, namespace: str, name: str) -> None:
        self._stages.pop((namespace, name), None)

    def stage(self, namespace: str, name: str) -> StageWorker | None:
        return self._stages.get((namespace, name))

    def add_pipeline(self, namespace: str, name: str) -> Worker:
        return self._pipelines.setdefault((namespace, name), Worker())

    def remove_pipeline(self, namespace: str, name: str) -> None:
        self._pipelines.pop((namespace, name), None)

    def pipeline(self, namespace: str, name: str) -> Worker | None:
        return self._pipelines.get((namespace, name))

    def stage_spec_changed(self, namespace: str, name: str, generation: int | None) -> None:
        worker = self._stages.get((namespace, name))
        if worker and generation != worker.generation:
            worker.refresh = True
            worker.wake.set()

    def application_changed(
        self, namespace: str, stage_object: str, application: str, state: ApplicationState | None
    ) -> None:
        """`state` None: the application is gone."""
        worker = self._stages.get((namespace, stage_object))
        if worker and (state is None or not worker.knows(application, state)):
            worker.wake.set()

    def readiness(
        self, namespace: str, pipeline: str, stages: Iterable[str]
    ) -> dict[str, bool] | None:
        """The readiness of `stages` of `pipeline` as their own loops know it (only a stage's
        loop writes its status), or None if a loop does not know it yet."""
        known = {
            worker.stage: worker.ready
            for (stage_namespace, _), worker in self._stages.items()
            if stage_namespace == namespace and worker.pipeline == pipeline
        }
        result = {}
        for stage in stages:
            ready = known.get(stage)
            if ready is None:
                return None
            result[stage] = ready
        return result

    def wake_dependents(self, namespace: str, pipeline: str, stages: Iterable[str]) -> None:
        """Wake the stages of `pipeline` still waiting for one of `stages`."""
        ready = set(stages)
        for (stage_namespace, _), worker in tuple(self._stages.items()):
            if (
                stage_namespace == namespace
                and worker.pipeline == pipeline
                and worker.waiting_for_dependencies
                and worker.depends_on & ready
            ):
                worker.wake.set()

    def wake_pipeline(self, namespace: str, name: str, generation: int | None = None) -> None:
        worker = self._pipelines.get((namespace, name))
        if worker and (generation is None or generation != worker.generation):
            if generation is not None:
                worker.refresh = True
            worker.wake.set()
