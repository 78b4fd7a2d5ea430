"""What a Pipeline should do next: which PipelineStages to create, update or delete, and the
summary of their statuses. Plain functions over plain data, like stage_decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carstream_operator import stage_decisions as sd
from carstream_operator.builders import stage_specs
from carstream_operator.model import Condition, StageSpec, updated_conditions

PIPELINE_PHASES = ("Pending", "Progressing", "Running", "Succeeded", "Suspended", "Failed")
SETTLED_STAGE_PHASES = frozenset({sd.RUNNING, sd.SUCCEEDED, sd.SCHEDULED, sd.IDLE})
PROGRESSING_STAGE_PHASES = frozenset({sd.PENDING, sd.STARTING, sd.STOPPING, sd.BACKING_OFF})
# How much of a failing stage's message the Pipeline's Degraded condition repeats.
MAX_STAGE_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ExistingStage:
    """A PipelineStage found in the cluster, owned by the pipeline."""

    name: str  # the stage's name within the pipeline (spec.stage)
    object_name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    deleting: bool = False


@dataclass(frozen=True)
class PipelinePlan:
    create: tuple[dict[str, Any], ...]  # stage specs
    update: tuple[tuple[str, dict[str, Any]], ...]  # (object name, new spec)
    delete: tuple[str, ...]  # object names


def plan_stages(
    pipeline: str, spec: Mapping[str, Any], existing: Sequence[ExistingStage]
) -> PipelinePlan:
    desired = stage_specs(pipeline, spec)
    found = {stage.name: stage for stage in existing}
    create = []
    update = []
    for name, stage_spec in desired.items():
        current = found.get(name)
        if current is None:
            create.append(stage_spec)
        elif not current.deleting and not same_stage_spec(current.spec, stage_spec):
            update.append((current.object_name, stage_spec))
    delete = [
        stage.object_name for stage in existing if stage.name not in desired and not stage.deleting
    ]
    return PipelinePlan(tuple(create), tuple(update), tuple(delete))


def same_stage_spec(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Equal once defaults are applied: the API server fills in what `desired` leaves out."""
    return StageSpec.from_dict(current) == StageSpec.from_dict(desired)


def summarize(
    spec: Mapping[str, Any],
    stages: Sequence[ExistingStage],
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The Pipeline's status from its stages' statuses."""
    by_name = {stage.name: stage for stage in stages}
    rows = []
    for item in spec["stages"]:
        stage = by_name.get(item["name"])
        status = stage.status if stage else {}
        rows.append(
            {
                "name": item["name"],
                "phase": status.get("phase") or sd.PENDING,
                "reason": status.get("reason") or "",
                "message": status.get("message") or "",
                "restarts": int(status.get("restarts") or 0),
                "application": status.get("application") or "",
                "degraded": _condition_true(status, "Degraded"),
            }
        )
    phases = [row["phase"] for row in rows]
    phase = _pipeline_phase(phases)
    settled = sum(1 for p in phases if p in SETTLED_STAGE_PHASES)
    failing = [_why(row) for row in rows if row["phase"] in sd.WARNING_PHASES or row["degraded"]]
    moving = [row["name"] for row in rows if row["phase"] in PROGRESSING_STAGE_PHASES]
    wanted = [
        (
            "Ready",
            phase in ("Running", "Succeeded"),
            phase,
            f"{settled} of {len(rows)} stages running, scheduled or succeeded",
        ),
        (
            "Progressing",
            bool(moving),
            "StagesProgressing" if moving else "StagesSettled",
            f"in progress: {', '.join(moving)}" if moving else "no stage is starting",
        ),
        (
            "Degraded",
            bool(failing),
            "StagesFailing" if failing else "NoFailures",
            f"failing: {', '.join(failing)}" if failing else "no stage is failing",
        ),
    ]
    old_conditions = tuple(Condition.from_dict(c) for c in (previous or {}).get("conditions") or ())
    conditions = updated_conditions(old_conditions, wanted, now=now, generation=generation)
    return {
        "phase": phase,
        "readyStages": f"{settled}/{len(rows)}",
        "restarts": sum(row["restarts"] for row in rows),
        "stages": [
            {key: row[key] for key in ("name", "phase", "reason", "restarts", "application")}
            for row in rows
        ],
        "observedGeneration": generation,
        "conditions": [condition.to_dict() for condition in conditions],
    }


def _why(row: Mapping[str, Any]) -> str:
    """A failing stage and why: `enrich (KafkaAuthenticationFailed: cars-enrich-2 FAILED: ...)`."""
    message = row["message"]
    if len(message) > MAX_STAGE_MESSAGE_CHARS:
        message = message[: MAX_STAGE_MESSAGE_CHARS - 3] + "..."
    why = ": ".join(part for part in (row["reason"], message) if part)
    return f"{row['name']} ({why})" if why else row["name"]


def _pipeline_phase(phases: Sequence[str]) -> str:
    if any(p == sd.FAILED for p in phases):
        return "Failed"
    if all(p == sd.SUCCEEDED for p in phases):
        return "Succeeded"
    if all(p in (sd.SUSPENDED, sd.SUCCEEDED) for p in phases):
        return "Suspended"
    if all(p in SETTLED_STAGE_PHASES for p in phases):
        return "Running"
    if all(p == sd.PENDING for p in phases):
        return "Pending"
    return "Progressing"


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or ()
    )
