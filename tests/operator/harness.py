"""What the operator tests run against the real API server: the operator as a subprocess, a
stand-in for spark-operator (it patches SparkApplication status), and a log of every
SparkApplication the operator created or deleted, taken from a watch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import watch
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from carstream_operator import resources as r
from tests.fixtures.kube import ControlPlane, free_ports
from tests.fixtures.waiting import wait_for as wait_for  # the operator tests import it here
from tests.operator.driver_pods import create_failed_driver_pod, mark_failed
from tests.operator.examples import pipeline

T = TypeVar("T")
Obj = dict[str, Any]

# Short timings so the tests take seconds: every object is reconciled at least every 3 s.
TEST_SETTINGS = {
    "CARSTREAM_OPERATOR_RESYNC_SECONDS": "3",
}
STARTUP_TIMEOUT_SECONDS = 60


class OperatorProcess:
    """`carstream-operator --namespace NS` in a subprocess, with its liveness and metrics."""

    def __init__(
        self,
        plane: ControlPlane,
        namespace: str,
        log_dir: Path,
        *,
        verbose: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.plane = plane
        self.verbose = verbose
        self.settings = TEST_SETTINGS if settings is None else settings
        self.namespace = namespace
        self.log_path = log_dir / f"operator-{namespace}.log"
        self.liveness_port, self.metrics_port = free_ports(2)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        command = [
            str(Path(sys.executable).parent / "carstream-operator"),
            "--namespace",
            self.namespace,
            "--liveness-port",
            str(self.liveness_port),
            "--metrics-port",
            str(self.metrics_port),
            *(["--verbose"] if self.verbose else []),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            self.process = subprocess.Popen(
                command,
                env={**self.plane.env(), **self.settings},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self._alive, "the operator's liveness endpoint", timeout=STARTUP_TIMEOUT_SECONDS)

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"the operator exited:\n{self.log_tail()}")
        try:
            return self.http_get(self.liveness_port, "/healthz") is not None
        except OSError:
            return False

    def http_get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample on the operator's /metrics, or None if it has none."""
        text = self.http_get(self.metrics_port, "/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(key) == value for key, value in labels.items()
                ):
                    return float(sample.value)
        return None

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(
                f"the operator did not stop on SIGTERM:\n{self.log_tail()}"
            ) from None
        finally:
            self.process = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class ApplicationLog:
    """Every SparkApplication ADDED or DELETED in a namespace, in order, from a watch."""

    added: list[tuple[float, str]] = field(default_factory=list)
    deleted: list[tuple[float, str]] = field(default_factory=list)
    max_live_per_stage: dict[str, int] = field(default_factory=dict)
    _live: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        stage = obj["metadata"].get("labels", {}).get(r.LABEL_STAGE_OBJECT, "")
        with self.lock:
            live = self._live.setdefault(stage, set())
            if kind == "ADDED":
                self.added.append((time.monotonic(), name))
                live.add(name)
            elif kind == "DELETED":
                self.deleted.append((time.monotonic(), name))
                live.discard(name)
            self.max_live_per_stage[stage] = max(self.max_live_per_stage.get(stage, 0), len(live))

    def added_names(self) -> list[str]:
        with self.lock:
            return [name for _, name in self.added]

    def added_at(self, name: str) -> float | None:
        with self.lock:
            return next((at for at, added in self.added if added == name), None)

    def deleted_at(self, name: str) -> float | None:
        with self.lock:
            return next((at for at, deleted in self.deleted if deleted == name), None)


class SparkOperatorStandIn:
    """Plays spark-operator and the user: creates Pipelines, patches application states."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.namespace = namespace
        client = plane.api_client()
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)
        self.log = ApplicationLog()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watch_ready = threading.Event()
        self._watcher.start()
        wait_for(self._watch_ready.is_set, "the SparkApplication watch")

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=10)

    def _watch(self) -> None:
        resource_version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            kwargs: dict[str, Any] = {"timeout_seconds": 1, "allow_watch_bookmarks": False}
            if resource_version:
                kwargs["resource_version"] = resource_version
            else:
                listing = self.custom.list_namespaced_custom_object(
                    r.SPARK_GROUP, r.SPARK_VERSION, self.namespace, r.SPARK_PLURAL
                )
                resource_version = listing["metadata"]["resourceVersion"]
                kwargs["resource_version"] = resource_version
                self._watch_ready.set()
            try:
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    r.SPARK_GROUP,
                    r.SPARK_VERSION,
                    self.namespace,
                    r.SPARK_PLURAL,
                    **kwargs,
                ):
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    self.log.record(event["type"], obj)
                    if self._stop.is_set():
                        stream.stop()
            except ApiException as error:
                if error.status != 410:
                    raise
                raise AssertionError("the SparkApplication watch fell behind (410 Gone)") from None

    # -- Pipelines -------------------------------------------------------------------------

    def create_pipeline(self, name: str, spec: Obj) -> Obj:
        created: Obj = self.custom.create_namespaced_custom_object(
            r.GROUP, r.VERSION, self.namespace, r.PIPELINE_PLURAL, pipeline(name, spec)
        )
        return created

    def patch_pipeline(self, name: str, patch: list[Obj]) -> None:
        """A JSON patch of the Pipeline."""
        self.custom.patch_namespaced_custom_object(
            r.GROUP,
            r.VERSION,
            self.namespace,
            r.PIPELINE_PLURAL,
            name,
            patch,
            _content_type="application/json-patch+json",
        )

    def delete_pipeline(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            r.GROUP, r.VERSION, self.namespace, r.PIPELINE_PLURAL, name
        )

    def get_pipeline(self, name: str) -> Obj | None:
        return self._get(r.GROUP, r.VERSION, r.PIPELINE_PLURAL, name)

    def stage(self, name: str) -> Obj:
        stage = self._get(r.GROUP, r.VERSION, r.STAGE_PLURAL, name)
        assert stage is not None, f"no PipelineStage {name}"
        return stage

    def stage_status(self, name: str) -> Obj:
        status: Obj = self.stage(name).get("status") or {}
        return status

    def stages(self) -> list[Obj]:
        items: list[Obj] = self.custom.list_namespaced_custom_object(
            r.GROUP, r.VERSION, self.namespace, r.STAGE_PLURAL
        )["items"]
        return items

    def _get(self, group: str, version: str, plural: str, name: str) -> Obj | None:
        try:
            obj: Obj = self.custom.get_namespaced_custom_object(
                group, version, self.namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return obj

    # -- SparkApplications -----------------------------------------------------------------

    def applications(self, stage: str | None = None) -> list[Obj]:
        selector = f"{r.LABEL_STAGE_OBJECT}={stage}" if stage else None
        items: list[Obj] = self.custom.list_namespaced_custom_object(
            r.SPARK_GROUP,
            r.SPARK_VERSION,
            self.namespace,
            r.SPARK_PLURAL,
            label_selector=selector,
        )["items"]
        return [app for app in items if not app["metadata"].get("deletionTimestamp")]

    def application_names(self, stage: str | None = None) -> list[str]:
        return sorted(app["metadata"]["name"] for app in self.applications(stage))

    def application(self, name: str) -> Obj | None:
        return self._get(r.SPARK_GROUP, r.SPARK_VERSION, r.SPARK_PLURAL, name)

    def set_state(self, name: str, state: str, error: str = "") -> None:
        """What spark-operator writes into a SparkApplication's status."""
        app_state = {"state": state, **({"errorMessage": error} if error else {})}
        self.custom.patch_namespaced_custom_object_status(
            r.SPARK_GROUP,
            r.SPARK_VERSION,
            self.namespace,
            r.SPARK_PLURAL,
            name,
            {"status": {"applicationState": app_state, "driverInfo": {}}},
        )

    def fail_driver(self, name: str, message: str) -> str:
        """Application `name` failed: its driver pod ended with `message` as its termination
        message, and spark-operator marked the application FAILED; returns the pod's name."""
        pod = create_failed_driver_pod(self.core, self.namespace, name, message)
        mark_failed(self.custom, self.namespace, name, pod)
        return pod

    def delete_application(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            r.SPARK_GROUP, r.SPARK_VERSION, self.namespace, r.SPARK_PLURAL, name
        )

    def wait_for_application(self, stage: str, timeout: float = 20.0) -> str:
        """The name of the stage's one live application, once there is exactly one."""
        names = wait_for(
            lambda: self.application_names(stage) or None,
            f"a SparkApplication of {stage}",
            timeout=timeout,
        )
        assert len(names) == 1, f"{stage} has several applications: {names}"
        return names[0]

    def wait_for_phase(
        self, stage: str, phase: str, reason: str | None = None, timeout: float = 20.0
    ) -> Obj:
        def reached() -> Obj | None:
            obj = self._get(r.GROUP, r.VERSION, r.STAGE_PLURAL, stage)
            status = (obj or {}).get("status") or {}
            if status.get("phase") == phase and (reason is None or status.get("reason") == reason):
                return status
            return None

        return wait_for(reached, f"{stage} in phase {phase} ({reason or 'any reason'})", timeout)

    # -- Events ----------------------------------------------------------------------------

    def events(self, involved: str) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={involved}"
        ).items
        ordered = sorted(
            items, key=lambda e: (e.first_timestamp or e.event_time or 0, e.count or 0)
        )
        return [(e.type, e.reason, e.message) for e in ordered]

    def event_reasons(self, involved: str) -> set[str]:
        return {reason for _, reason, _ in self.events(involved)}

    def wait_for_events(self, involved: str, *reasons: str, timeout: float = 10.0) -> None:
        """Until Events with all `reasons` were posted about `involved` (kopf posts them from a
        queue, a moment after the status changed)."""
        wait_for(
            lambda: set(reasons) <= self.event_reasons(involved),
            f"Events {', '.join(reasons)} about {involved}",
            timeout=timeout,
        )
