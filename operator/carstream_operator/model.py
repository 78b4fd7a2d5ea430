"""Typed, read-only views of the operator's plain data: stage specs and statuses, applications.

The API server applies the CRD defaults; the same defaults live here (and the CRD generator
takes them from here), so a spec read from a plain dict in a unit test means the same as one
read from the cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from carstream_operator import resources as r
from carstream_operator.wake import WakePolicy, WakeStatus

# spark-operator's application states (api/v1beta2 ApplicationStateType).
SPARK_RUNNING_STATES = frozenset({"RUNNING", "SUCCEEDING", "FAILING"})
SPARK_COMPLETED = "COMPLETED"
SPARK_FAILED_STATES = frozenset({"FAILED", "SUBMISSION_FAILED"})


# ---------------------------------------------------------------------------------------------
# Time


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it, e.g. 2026-01-01T00:00:00Z."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds (sub-second backoffs stay visible)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Spec


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    initial_backoff_seconds: float = 10.0
    max_backoff_seconds: float = 300.0
    backoff_factor: float = 2.0
    reset_after_seconds: float = 600.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RestartPolicy:
        data = data or {}
        default = cls()
        return cls(
            max_restarts=int(data.get("maxRestarts", default.max_restarts)),
            initial_backoff_seconds=float(
                data.get("initialBackoffSeconds", default.initial_backoff_seconds)
            ),
            max_backoff_seconds=float(data.get("maxBackoffSeconds", default.max_backoff_seconds)),
            backoff_factor=float(data.get("backoffFactor", default.backoff_factor)),
            reset_after_seconds=float(data.get("resetAfterSeconds", default.reset_after_seconds)),
        )

    def backoff_seconds(self, restart: int) -> float:
        """Delay before restart number `restart` (1 for the first restart)."""
        exponent = max(restart - 1, 0)
        delay = self.initial_backoff_seconds * self.backoff_factor**exponent
        return float(min(delay, self.max_backoff_seconds))


@dataclass(frozen=True)
class Trigger:
    type: str = "processingTime"
    interval: str = "5 seconds"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Trigger:
        data = data or {}
        return cls(type=data.get("type", cls.type), interval=data.get("interval", cls.interval))


@dataclass(frozen=True)
class PodResources:
    cores: int = 1
    memory: str = "1g"
    instances: int = 1
    # The pod's CPU request when it is less than `cores` (a Kubernetes quantity: 250m, 0.5).
    core_request: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PodResources:
        data = data or {}
        return cls(
            cores=int(data.get("cores", cls.cores)),
            memory=str(data.get("memory", cls.memory)),
            instances=int(data.get("instances", cls.instances)),
            core_request=data.get("coreRequest"),
        )


@dataclass(frozen=True)
class SecretKey:
    name: str
    key: str


@dataclass(frozen=True)
class KafkaCredentials:
    secret_name: str
    username: str
    password_key: str = "password"


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    credentials: KafkaCredentials | None = None
    ca_secret: SecretKey | None = None
    ca_file: str | None = None

    DEFAULT_CA_KEY = "ca.crt"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KafkaConnection:
        credentials = None
        if secret := data.get("credentialsSecret"):
            credentials = KafkaCredentials(
                secret_name=secret["name"],
                username=secret.get("username") or secret["name"],
                password_key=secret.get("passwordKey", KafkaCredentials.password_key),
            )
        ca_secret = None
        if ca := data.get("caSecret"):
            ca_secret = SecretKey(name=ca["name"], key=ca.get("key", cls.DEFAULT_CA_KEY))
        return cls(
            bootstrap_servers=data["bootstrapServers"],
            security_protocol=data.get("securityProtocol", cls.security_protocol),
            sasl_mechanism=data.get("saslMechanism"),
            credentials=credentials,
            ca_secret=ca_secret,
            ca_file=data.get("caFile"),
        )


@dataclass(frozen=True)
class S3Storage:
    """storage.s3: an S3-compatible endpoint and region, and a Secret with keys for it."""

    endpoint: str | None = None
    region: str | None = None
    credentials_secret: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> S3Storage:
        data = data or {}
        endpoint = data.get("endpoint")
        return cls(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            region=data.get("region"),
            credentials_secret=(data.get("credentialsSecret") or {}).get("name"),
        )


DEFAULT_IMAGE_PULL_POLICY = "IfNotPresent"
DEFAULT_START_DEADLINE_SECONDS = 600


@dataclass(frozen=True)
class StageSpec:
    """A PipelineStage's spec: one stage with the shared settings of its pipeline."""

    pipeline: str
    stage: str
    job: str
    image: str
    kafka: KafkaConnection
    warehouse: str
    checkpoint_root: str
    s3: S3Storage = field(default_factory=S3Storage)
    image_pull_policy: str = DEFAULT_IMAGE_PULL_POLICY
    service_account_name: str | None = None
    depends_on: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    trigger: Trigger = field(default_factory=Trigger)
    driver: PodResources = field(default_factory=PodResources)
    executor: PodResources = field(default_factory=PodResources)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    start_deadline_seconds: int = DEFAULT_START_DEADLINE_SECONDS
    time_limit_seconds: int | None = None
    schedule: str | None = None
    # Serverless: wake on backlog (availableNow), stop after this long without input
    # (processingTime); see the wake module.
    wake: WakePolicy | None = None
    idle_stop_seconds: int | None = None
    suspend: bool = False
    spark_conf: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageSpec:
        storage = data["storage"]
        return cls(
            pipeline=data["pipeline"],
            stage=data["stage"],
            job=data["job"],
            image=data["image"],
            kafka=KafkaConnection.from_dict(data["kafka"]),
            warehouse=storage["warehouse"],
            checkpoint_root=storage["checkpointRoot"],
            s3=S3Storage.from_dict(storage.get("s3")),
            image_pull_policy=data.get("imagePullPolicy", DEFAULT_IMAGE_PULL_POLICY),
            service_account_name=data.get("serviceAccountName"),
            depends_on=tuple(data.get("dependsOn") or ()),
            args=tuple(data.get("args") or ()),
            trigger=Trigger.from_dict(data.get("trigger")),
            driver=PodResources.from_dict(data.get("driver")),
            executor=PodResources.from_dict(data.get("executor")),
            restart_policy=RestartPolicy.from_dict(data.get("restartPolicy")),
            start_deadline_seconds=int(
                data.get("startDeadlineSeconds", DEFAULT_START_DEADLINE_SECONDS)
            ),
            time_limit_seconds=data.get("timeLimitSeconds"),
            schedule=data.get("schedule"),
            wake=WakePolicy.from_dict(data.get("wake")),
            idle_stop_seconds=data.get("idleStopSeconds"),
            suspend=bool(data.get("suspend", False)),
            spark_conf=dict(data.get("sparkConf") or {}),
        )

    @property
    def streaming(self) -> bool:
        """Reads Kafka with a checkpoint and a trigger (enrich, detect, count)."""
        return self.job not in r.RUN_TO_COMPLETION_JOBS

    @property
    def runs_to_completion(self) -> bool:
        return not self.streaming or self.trigger.type == "availableNow"

    @property
    def checkpoint_location(self) -> str:
        return f"{self.checkpoint_root.rstrip('/')}/{self.pipeline}/{self.stage}"

    @property
    def uses_s3(self) -> bool:
        return any(
            location.startswith(("s3a://", "s3://"))
            for location in (self.warehouse, self.checkpoint_root)
        )


# ---------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: datetime | None = None
    observed_generation: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(
            type=data["type"],
            status=data["status"],
            reason=data.get("reason", ""),
            message=data.get("message", ""),
            last_transition_time=parse_time(data.get("lastTransitionTime")),
            observed_generation=data.get("observedGeneration"),
        )

    def to_dict(self) -> dict[str, Any]:
        return _without_none(
            {
                "type": self.type,
                "status": self.status,
                "reason": self.reason,
                "message": self.message,
                "lastTransitionTime": format_time(self.last_transition_time),
                "observedGeneration": self.observed_generation,
            }
        )


def updated_conditions(
    previous: Sequence[Condition],
    wanted: Sequence[tuple[str, bool, str, str]],
    *,
    now: datetime,
    generation: int | None,
) -> tuple[Condition, ...]:
    """Conditions (type, true?, reason, message), keeping lastTransitionTime while unchanged."""
    known = {condition.type: condition for condition in previous}
    result = []
    for kind, true, reason, message in wanted:
        status = "True" if true else "False"
        before = known.get(kind)
        since = before.last_transition_time if before and before.status == status else None
        result.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=since or now,
                observed_generation=generation,
            )
        )
    return tuple(result)


@dataclass(frozen=True)
class StageStatus:
    phase: str = ""
    reason: str = ""
    message: str = ""
    ready: bool = False
    run: int = 0
    application: str = ""
    application_state: str = ""
    restarts: int = 0
    spec_hash: str = ""
    start_time: datetime | None = None
    running_since: datetime | None = None
    last_failure_time: datetime | None = None
    next_restart_time: datetime | None = None
    next_run_time: datetime | None = None
    last_success_time: datetime | None = None
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    # status.backlog and status.wake of a stage with spec.wake
    wake: WakeStatus = field(default_factory=WakeStatus)

    _TIMES: ClassVar[dict[str, str]] = {
        "start_time": "startTime",
        "running_since": "runningSince",
        "last_failure_time": "lastFailureTime",
        "next_restart_time": "nextRestartTime",
        "next_run_time": "nextRunTime",
        "last_success_time": "lastSuccessTime",
    }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StageStatus:
        data = data or {}
        return cls(
            phase=data.get("phase", ""),
            reason=data.get("reason", ""),
            message=data.get("message", ""),
            ready=bool(data.get("ready", False)),
            run=int(data.get("run", 0)),
            application=data.get("application", ""),
            application_state=data.get("applicationState", ""),
            restarts=int(data.get("restarts", 0)),
            spec_hash=data.get("specHash", ""),
            observed_generation=data.get("observedGeneration"),
            conditions=tuple(Condition.from_dict(c) for c in data.get("conditions") or ()),
            wake=WakeStatus.from_status(data, parse_time),
            **{attr: parse_time(data.get(key)) for attr, key in cls._TIMES.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """The status as the API stores it; unset times are null so a merge patch clears them."""
        data: dict[str, Any] = {
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "ready": self.ready,
            "run": self.run,
            "application": self.application,
            "applicationState": self.application_state,
            "restarts": self.restarts,
            "specHash": self.spec_hash,
            "observedGeneration": self.observed_generation,
            "conditions": [condition.to_dict() for condition in self.conditions],
        }
        for attr, key in self._TIMES.items():
            data[key] = format_time(getattr(self, attr))
        data.update(self.wake.to_status(format_time))
        return data

    def replace(self, **changes: Any) -> StageStatus:
        return dataclasses.replace(self, **changes)


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# Children


@dataclass(frozen=True)
class ApplicationView:
    """What a stage needs to know about one of its SparkApplications."""

    name: str
    run: int
    restarts: int
    spec_hash: str
    state: str
    error_message: str
    created: datetime | None
    deleting: bool
    # The driver pod, as spark-operator records it (status.driverInfo.podName).
    driver_pod: str = ""
    # The termination message of the driver container (driver_failure), when the handler read
    # it: only for a failed application whose failure the stage has not recorded yet.
    driver_message: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ApplicationView:
        metadata = obj.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        status = obj.get("status") or {}
        app_state = status.get("applicationState") or {}
        return cls(
            name=metadata["name"],
            run=_int(annotations.get(r.ANNOTATION_RUN)),
            restarts=_int(annotations.get(r.ANNOTATION_RESTARTS)),
            spec_hash=annotations.get(r.ANNOTATION_SPEC_HASH, ""),
            state=app_state.get("state", ""),
            error_message=app_state.get("errorMessage", ""),
            created=parse_time(metadata.get("creationTimestamp")),
            deleting=bool(metadata.get("deletionTimestamp")),
            driver_pod=str((status.get("driverInfo") or {}).get("podName") or ""),
        )


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
