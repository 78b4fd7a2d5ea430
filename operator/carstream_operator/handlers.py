"""The kopf handlers: thin loops that read, call the decision functions, and write.

Per Pipeline and per PipelineStage, a kopf daemon runs a reconcile loop (see workers.py);
watch events on SparkApplications, PipelineStages and Pipelines only wake those loops.

Order of writes in a stage reconcile: create the application, delete old ones, then record the
status. An operator killed in between finds the application on its next start and records it
(run number and restart count come back from the application's annotations), so it never
creates a second one and never loses a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from carstream_operator import builders, driver_failure, metrics
from carstream_operator import resources as r
from carstream_operator import stage_decisions as sd
from carstream_operator.backlog import BacklogReaders, offsets_from_status
from carstream_operator.kube_api import KubeApi, Obj, load_client_config, owned_by
from carstream_operator.model import ApplicationView, StageSpec, StageStatus
from carstream_operator.pipeline_decisions import ExistingStage, plan_stages, summarize
from carstream_operator.settings import Settings
from carstream_operator.wake import BacklogView
from carstream_operator.workers import StageWorker, Worker, Workers

# After an unexpected error (API server unreachable, ...), retry after this long, doubling up
# to the maximum.
ERROR_RETRY_SECONDS = 1.0
ERROR_RETRY_MAX_SECONDS = 30.0
DAEMON_CANCELLATION_SECONDS = 5.0
# A Pipeline's summary waits this long after a wake-up, to take in a burst of stage changes.
PIPELINE_COALESCE_SECONDS = 0.25
LOG = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the handlers share: settings, the API, the loops. Kept in kopf's memo."""

    settings: Settings
    api: KubeApi
    workers: Workers
    backlogs: BacklogReaders

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        client = ApiClient(load_client_config())
        api = KubeApi(
            client, threads=settings.api_threads, request_timeout=settings.request_timeout_seconds
        )
        return cls(settings=settings, api=api, workers=Workers(), backlogs=BacklogReaders(settings))


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def utc_now() -> datetime:
    """Now, to the millisecond: what a status timestamp can hold."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# ---------------------------------------------------------------------------------------------
# Start-up


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = r.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=r.KOPF_ANNOTATIONS_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=r.KOPF_ANNOTATIONS_PREFIX
    )
    # Events reach the loops within milliseconds, not after kopf's default 0.1 s batch window.
    settings.batching.batch_window = 0.01
    # kopf's own log lines ("Handler ... succeeded") are not Events; ours come from kopf.event.
    settings.posting.level = logging.WARNING
    if "runtime" not in memo:
        memo["runtime"] = Runtime.create(Settings.from_env())
    # Watching named namespaces needs no cluster-wide right (the chart grants none): kopf then
    # takes the namespaces as given and the resources from API discovery, and neither lists
    # namespaces nor watches CRDs.
    settings.scanning.disabled = bool(_runtime(memo).settings.namespaces)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if "runtime" not in memo:
        return
    runtime = _runtime(memo)
    try:
        released = await runtime.api.release_finalizers(runtime.settings.namespaces)
    except Exception as error:  # the API server may be gone too: stopping goes on
        logger.warning(f"could not release the finalizers: {error}")
    else:
        logger.info(f"released the finalizers of {released} objects")
    runtime.api.close()


@kopf.on.probe(id="reconcileLoops")
def count_loops(memo: kopf.Memo, **_: Any) -> int:
    return len(_runtime(memo).workers)


# ---------------------------------------------------------------------------------------------
# Wake-ups


@kopf.on.event(
    r.SPARK_GROUP, r.SPARK_VERSION, r.SPARK_PLURAL, labels={r.LABEL_MANAGED_BY: r.MANAGER_NAME}
)
async def application_changed(
    event: kopf.RawEvent,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str | None,
    namespace: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    stage = meta.labels.get(r.LABEL_STAGE_OBJECT)
    if not (stage and namespace and name):
        return
    state = None
    if event.get("type") != "DELETED":
        app_state = status.get("applicationState") or {}
        state = (str(app_state.get("state") or ""), bool(meta.get("deletionTimestamp")))
    _runtime(memo).workers.application_changed(namespace, stage, name, state)


@kopf.on.event(r.GROUP, r.VERSION, r.STAGE_PLURAL)
async def stage_changed(
    event: kopf.RawEvent,
    meta: kopf.Meta,
    spec: kopf.Spec,
    name: str | None,
    namespace: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    if not (name and namespace):
        return
    workers = _runtime(memo).workers
    workers.stage_spec_changed(namespace, name, meta.get("generation"))
    pipeline = spec.get("pipeline")
    if pipeline and (event.get("type") == "DELETED" or meta.get("deletionTimestamp")):
        workers.wake_pipeline(namespace, pipeline)


@kopf.on.event(r.GROUP, r.VERSION, r.PIPELINE_PLURAL)
async def pipeline_changed(
    meta: kopf.Meta, name: str | None, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    if name and namespace:
        _runtime(memo).workers.wake_pipeline(namespace, name, generation=meta.get("generation"))


# ---------------------------------------------------------------------------------------------
# Loops


Logger = logging.Logger | logging.LoggerAdapter[Any]


async def _reconcile_loop(
    kind: str,
    worker: Worker,
    reconcile: Callable[[], Awaitable[float | None]],
    runtime: Runtime,
    stopped: kopf.DaemonStopped,
    logger: Logger,
    *,
    coalesce_seconds: float = 0.0,
) -> None:
    """Reconcile, then sleep until due, woken, or the resync interval; back off on errors.

    With `coalesce_seconds`, a wake-up waits that long so one reconcile serves a burst."""
    retry = ERROR_RETRY_SECONDS
    while not stopped:
        worker.start_reconcile()
        started = time.perf_counter()
        try:
            due = await reconcile()
        except (ApiException, OSError) as error:
            metrics.RECONCILES.labels(kind, "error").inc()
            logger.warning(f"reconcile failed, retrying in {retry:g}s: {error}")
            worker.refresh = True
            await worker.sleep(retry, stopped.wait())
            retry = min(retry * 2, ERROR_RETRY_MAX_SECONDS)
            continue
        retry = ERROR_RETRY_SECONDS
        metrics.RECONCILES.labels(kind, "ok").inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        resync = runtime.settings.resync_seconds
        woken = await worker.sleep(resync if due is None else min(due, resync), stopped.wait())
        if not woken:
            worker.refresh = True  # a resync reads everything again
        elif coalesce_seconds:
            await asyncio.sleep(coalesce_seconds)


@kopf.daemon(
    r.GROUP, r.VERSION, r.PIPELINE_PLURAL, cancellation_timeout=DAEMON_CANCELLATION_SECONDS
)
async def pipeline_loop(
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # Pipelines are namespaced
    runtime = _runtime(memo)
    worker = runtime.workers.add_pipeline(namespace, name)

    async def reconcile() -> None:
        await reconcile_pipeline(runtime, namespace, name, worker)

    try:
        await _reconcile_loop(
            "pipeline",
            worker,
            reconcile,
            runtime,
            stopped,
            logger,
            coalesce_seconds=PIPELINE_COALESCE_SECONDS,
        )
    finally:
        runtime.workers.remove_pipeline(namespace, name)


@kopf.daemon(r.GROUP, r.VERSION, r.STAGE_PLURAL, cancellation_timeout=DAEMON_CANCELLATION_SECONDS)
async def stage_loop(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # PipelineStages are namespaced
    runtime = _runtime(memo)
    pipeline = str(spec.get("pipeline", ""))
    stage = str(spec.get("stage", name))
    depends_on = [str(item) for item in spec.get("dependsOn") or ()]
    worker = runtime.workers.add_stage(namespace, name, pipeline, stage, depends_on)

    async def reconcile() -> float | None:
        return await reconcile_stage(runtime, namespace, name, worker, logger)

    try:
        await _reconcile_loop("stage", worker, reconcile, runtime, stopped, logger)
    finally:
        runtime.workers.remove_stage(namespace, name)
        metrics.forget_stage(namespace, pipeline, stage)


# ---------------------------------------------------------------------------------------------
# Reconciles


async def reconcile_pipeline(runtime: Runtime, namespace: str, name: str, worker: Worker) -> None:
    api = runtime.api
    pipeline = worker.obj if worker.obj is not None and not worker.refresh else None
    if pipeline is None:
        pipeline = await api.get_pipeline(namespace, name)
        if pipeline is None:
            return
        worker.remember(pipeline)
    if pipeline["metadata"].get("deletionTimestamp"):
        return
    metadata = pipeline["metadata"]
    generation = int(metadata.get("generation", 0))
    worker.generation = generation
    spec = pipeline["spec"]
    existing = []
    if pipeline.get("status"):
        # A new Pipeline has no stages yet: its first reconcile creates them without a list.
        existing = [
            _existing_stage(stage)
            for stage in await api.list_stages(namespace, name)
            if owned_by(stage, metadata["uid"])
        ]
    plan = plan_stages(name, spec, existing)
    for stage_spec in plan.create:
        body = builders.pipeline_stage(name, namespace, stage_spec)
        kopf.adopt(body, owner=cast(kopf.Body, pipeline))
        if not await api.create_stage(body):
            worker.wake.set()  # it was there after all: look again with a list
        existing.append(
            ExistingStage(stage_spec["stage"], body["metadata"]["name"], stage_spec, {})
        )
    for object_name, stage_spec in plan.update:
        await api.replace_stage_spec(namespace, object_name, stage_spec)
    for object_name in plan.delete:
        await api.delete_stage(namespace, object_name)
    status = summarize(
        spec, existing, generation=generation, previous=pipeline.get("status"), now=utc_now()
    )
    if status != pipeline.get("status"):
        worker.remember(await api.patch_pipeline_status(namespace, name, status))


def _existing_stage(obj: Obj) -> ExistingStage:
    return ExistingStage(
        name=obj["spec"]["stage"],
        object_name=obj["metadata"]["name"],
        spec=obj["spec"],
        status=obj.get("status") or {},
        deleting=bool(obj["metadata"].get("deletionTimestamp")),
    )


async def reconcile_stage(
    runtime: Runtime, namespace: str, name: str, worker: StageWorker, logger: Logger
) -> float | None:
    """One pass over a stage; returns the seconds until something is due, or None."""
    api, settings = runtime.api, runtime.settings
    stage = worker.obj if worker.obj is not None and not worker.refresh else None
    if stage is None:
        stage = await api.get_stage(namespace, name)
        if stage is None:
            return None
        worker.remember(stage)
    metadata = stage["metadata"]
    if metadata.get("deletionTimestamp"):
        return None
    generation = int(metadata.get("generation", 0))
    worker.generation = generation
    spec = StageSpec.from_dict(stage["spec"])
    status = StageStatus.from_dict(stage.get("status"))
    worker.ready = status.ready
    applications = await _applications(runtime, namespace, name, metadata["uid"], status)
    applications = await _with_driver_messages(runtime, namespace, status, applications)
    worker.applications = {app.name: (app.state, app.deleting) for app in applications}
    dependencies = None
    if sd.dependencies_needed(spec, status):
        dependencies = runtime.workers.readiness(namespace, spec.pipeline, spec.depends_on)
        if dependencies is None:
            dependencies = {
                sibling["spec"]["stage"]: bool((sibling.get("status") or {}).get("ready"))
                for sibling in await api.list_stages(namespace, spec.pipeline)
            }
    app_spec = builders.application_spec(spec, settings)
    backlog, backlog_error = None, None
    if sd.backlog_needed(spec, status):
        backlog, backlog_error = await _backlog(runtime, spec, status)
    observation = sd.StageObservation(
        name=name,
        generation=generation,
        spec=spec,
        status=status,
        applications=applications,
        dependencies=dependencies,
        desired_spec_hash=builders.application_spec_hash(app_spec),
        backlog=backlog,
        backlog_error=backlog_error,
    )
    plan = sd.decide_stage(observation, utc_now())

    if (create := plan.create) is not None:
        body = builders.spark_application(
            name=create.name,
            namespace=namespace,
            stage_object=name,
            spec=spec,
            run=create.run,
            restarts=create.restarts,
            settings=settings,
        )
        kopf.adopt(body, owner=cast(kopf.Body, stage))
        try:
            created = await api.create_application(body)
        except ApiException as error:
            if error.status not in (400, 422):
                raise
            message = f"the API server rejected {create.name}: {error.reason}: {error.body}"
            plan = sd.application_rejected(observation, plan, message[:2000], utc_now())
        else:
            worker.applications[create.name] = ("", False)
            if created:
                metrics.APPLICATIONS_CREATED.labels(namespace, spec.pipeline, spec.stage).inc()
            else:
                # Created before a crash: the next pass lists it and takes it over.
                logger.info(f"SparkApplication {create.name} already exists")
                worker.wake.set()
    states = {app.name: app.state for app in applications}
    for deletion in plan.delete:
        worker.applications[deletion.name] = (states.get(deletion.name, ""), True)
        await api.delete_application(namespace, deletion.name)

    new_status = plan.status
    if new_status != status:
        worker.remember(await api.patch_stage_status(namespace, name, new_status.to_dict()))
        worker.ready = new_status.ready
        runtime.workers.wake_pipeline(namespace, spec.pipeline)
        if new_status.ready and not status.ready:
            runtime.workers.wake_dependents(namespace, spec.pipeline, [spec.stage])
        if new_status.phase != status.phase:
            LOG.info(
                f"{namespace}/{name}: {status.phase or 'new'} -> {new_status.phase} "
                f"({new_status.reason}: {new_status.message})"
            )
    worker.depends_on = frozenset(spec.depends_on)
    worker.waiting_for_dependencies = sd.dependencies_needed(spec, new_status)
    for event in plan.events:
        kopf.event(
            cast(kopf.Body, stage), type=event.type, reason=event.reason, message=event.message
        )
    _count(namespace, spec, plan.outcomes, new_status.phase)
    _count_backlog(namespace, spec, observation, new_status)
    return plan.requeue_after


async def _backlog(
    runtime: Runtime, spec: StageSpec, status: StageStatus
) -> tuple[BacklogView | None, str | None]:
    """The backlog of a sleeping stage's input, read in a thread (the Kafka client blocks)."""
    floor = offsets_from_status(status.wake.drained_offsets)
    return await asyncio.to_thread(runtime.backlogs.read, spec, floor, utc_now())


async def _applications(
    runtime: Runtime, namespace: str, stage: str, stage_uid: str, status: StageStatus
) -> tuple[ApplicationView, ...]:
    """The stage's SparkApplications. Before its first run there is nothing to list: run 1
    has a fixed name, so creating it again after a crash only answers AlreadyExists."""
    if status.run == 0:
        return ()
    return tuple(
        ApplicationView.from_object(app)
        for app in await runtime.api.list_applications(namespace, stage)
        if owned_by(app, stage_uid)
    )


async def _with_driver_messages(
    runtime: Runtime,
    namespace: str,
    status: StageStatus,
    applications: tuple[ApplicationView, ...],
) -> tuple[ApplicationView, ...]:
    """The applications, with the termination message of the driver of each one whose failure
    the decision is about to record (its pod is read once: the failure is then recorded)."""
    result = []
    for app in applications:
        if sd.driver_message_needed(status, app):
            pod = await runtime.api.get_pod(namespace, app.driver_pod)
            message = driver_failure.termination_message(pod) if pod is not None else ""
            app = dataclasses.replace(app, driver_message=message)
        result.append(app)
    return tuple(result)


def _count(namespace: str, spec: StageSpec, outcomes: tuple[str, ...], phase: str) -> None:
    labels = (namespace, spec.pipeline, spec.stage)
    for outcome in outcomes:
        if outcome == sd.RESTART:
            metrics.STAGE_RESTARTS.labels(*labels).inc()
        elif outcome in (sd.TIME_LIMIT, sd.START_DEADLINE):
            metrics.STAGE_DEADLINES.labels(*labels, outcome).inc()
        elif outcome == sd.GAVE_UP:
            metrics.STAGE_GAVE_UP.labels(*labels).inc()
        elif outcome.startswith(sd.WAKE_OUTCOME):
            metrics.STAGE_WAKES.labels(*labels, outcome.removeprefix(sd.WAKE_OUTCOME)).inc()
    metrics.set_stage_phase(*labels, phase)


def _count_backlog(
    namespace: str, spec: StageSpec, observation: sd.StageObservation, status: StageStatus
) -> None:
    labels = (namespace, spec.pipeline, spec.stage)
    if observation.backlog_error is not None:
        metrics.BACKLOG_ERRORS.labels(*labels).inc()
    if observation.backlog is not None:
        metrics.BACKLOG_RECORDS.labels(*labels).set(observation.backlog.records)
        metrics.BACKLOG_AGE.labels(*labels).set(observation.backlog.oldest_age_seconds or 0)
