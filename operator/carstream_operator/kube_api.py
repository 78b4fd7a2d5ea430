"""The Kubernetes API calls of the operator, awaitable.

The `kubernetes` client is synchronous: each call runs in a small thread pool of its own so the
kopf event loop never blocks on the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from carstream_operator import resources as r

T = TypeVar("T")
Obj = dict[str, Any]
LOG = logging.getLogger(__name__)


def load_client_config() -> kubernetes.client.Configuration:
    """In a pod: its service account; elsewhere: the current context of the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        # KUBECONFIG as it is now: the client reads it only once, when it is imported.
        kubernetes.config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    references = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(reference.get("uid") == owner_uid for reference in references)


class KubeApi:
    def __init__(self, client: ApiClient, *, threads: int, request_timeout: float) -> None:
        self._client = client
        self._custom = CustomObjectsApi(client)
        self._core = CoreV1Api(client)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="kube-api")
        self._timeout = request_timeout

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(method, *args, _request_timeout=self._timeout, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> Obj | None:
        try:
            obj: Obj = await self._call(
                self._custom.get_namespaced_custom_object, group, version, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return obj

    async def _list(
        self, group: str, version: str, plural: str, namespace: str, selector: str
    ) -> list[Obj]:
        result: Obj = await self._call(
            self._custom.list_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            label_selector=selector,
        )
        items: list[Obj] = result.get("items") or []
        return items

    async def _create(self, group: str, version: str, plural: str, body: Obj) -> bool:
        """Creates `body`; False if an object of that name already exists."""
        namespace = body["metadata"]["namespace"]
        try:
            await self._call(
                self._custom.create_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                body,
                field_manager=r.MANAGER_NAME,
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def _delete(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> None:
        try:
            await self._call(
                self._custom.delete_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                propagation_policy="Background",
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def _patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        """Merge-patches the status; returns the object as stored."""
        patched: Obj = await self._call(
            self._custom.patch_namespaced_custom_object_status,
            r.GROUP,
            r.VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            field_manager=r.MANAGER_NAME,
        )
        return patched

    # -- finalizers ------------------------------------------------------------------------

    async def release_finalizers(self, namespaces: tuple[str, ...]) -> int:
        """Removes the operator's finalizer from every Pipeline and PipelineStage in
        `namespaces` (all namespaces when empty); returns how many objects it released.

        kopf puts a finalizer on every object a daemon runs for, and removes it only while it
        runs: an object deleted while no operator runs would wait forever (with `helm
        uninstall`, the operator's Deployment goes at the same time as the Pipeline). The
        operator needs no clean-up of its own on deletion (owner references make the API
        server's garbage collector delete stages, applications and pods), so it releases its
        finalizers when it stops, and kopf puts them back when it starts again."""
        released = 0
        for plural in (r.PIPELINE_PLURAL, r.STAGE_PLURAL):
            for obj in await self._list_everywhere(plural, namespaces):
                metadata = obj["metadata"]
                remaining = r.finalizers_without_ours(metadata)
                if remaining is None:
                    continue
                patch = {
                    "metadata": {
                        "finalizers": remaining,
                        # Someone else changing the list meanwhile: their change wins (409).
                        "resourceVersion": metadata["resourceVersion"],
                    }
                }
                try:
                    await self._call(
                        self._custom.patch_namespaced_custom_object,
                        r.GROUP,
                        r.VERSION,
                        metadata["namespace"],
                        plural,
                        metadata["name"],
                        patch,
                        field_manager=r.MANAGER_NAME,
                    )
                except ApiException as error:
                    if error.status not in (404, 409):
                        raise
                    continue
                released += 1
        return released

    async def _list_everywhere(self, plural: str, namespaces: tuple[str, ...]) -> list[Obj]:
        if namespaces:
            found: list[Obj] = []
            for namespace in namespaces:
                found += await self._list(r.GROUP, r.VERSION, plural, namespace, "")
            return found
        result: Obj = await self._call(
            self._custom.list_cluster_custom_object, r.GROUP, r.VERSION, plural
        )
        items: list[Obj] = result.get("items") or []
        return items

    # -- Pipelines -------------------------------------------------------------------------

    async def get_pipeline(self, namespace: str, name: str) -> Obj | None:
        return await self._get(r.GROUP, r.VERSION, r.PIPELINE_PLURAL, namespace, name)

    async def patch_pipeline_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        return await self._patch_status(r.PIPELINE_PLURAL, namespace, name, status)

    # -- PipelineStages --------------------------------------------------------------------

    async def get_stage(self, namespace: str, name: str) -> Obj | None:
        return await self._get(r.GROUP, r.VERSION, r.STAGE_PLURAL, namespace, name)

    async def list_stages(self, namespace: str, pipeline: str) -> list[Obj]:
        selector = f"{r.LABEL_PIPELINE}={pipeline}"
        return await self._list(r.GROUP, r.VERSION, r.STAGE_PLURAL, namespace, selector)

    async def create_stage(self, body: Obj) -> bool:
        return await self._create(r.GROUP, r.VERSION, r.STAGE_PLURAL, body)

    async def replace_stage_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        await self._call(
            self._custom.patch_namespaced_custom_object,
            r.GROUP,
            r.VERSION,
            namespace,
            r.STAGE_PLURAL,
            name,
            [{"op": "replace", "path": "/spec", "value": dict(spec)}],
            field_manager=r.MANAGER_NAME,
            _content_type="application/json-patch+json",
        )

    async def delete_stage(self, namespace: str, name: str) -> None:
        await self._delete(r.GROUP, r.VERSION, r.STAGE_PLURAL, namespace, name)

    async def patch_stage_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj:
        return await self._patch_status(r.STAGE_PLURAL, namespace, name, status)

    # -- SparkApplications -----------------------------------------------------------------

    async def list_applications(self, namespace: str, stage_object: str) -> list[Obj]:
        selector = f"{r.LABEL_STAGE_OBJECT}={stage_object}"
        return await self._list(r.SPARK_GROUP, r.SPARK_VERSION, r.SPARK_PLURAL, namespace, selector)

    async def create_application(self, body: Obj) -> bool:
        return await self._create(r.SPARK_GROUP, r.SPARK_VERSION, r.SPARK_PLURAL, body)

    async def delete_application(self, namespace: str, name: str) -> None:
        await self._delete(r.SPARK_GROUP, r.SPARK_VERSION, r.SPARK_PLURAL, namespace, name)

    # -- Pods ------------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        """A pod as a plain dict (the API's field names), or None if it is gone or may not be
        read: a driver's termination message is worth a look, never a failed reconcile (an
        operator whose Role lacks `get` on pods still restarts the stage)."""
        try:
            pod = await self._call(self._core.read_namespaced_pod, name, namespace)
        except ApiException as error:
            if error.status == 403:
                LOG.warning(f"may not read pod {namespace}/{name}: {error.reason}")
                return None
            if error.status == 404:
                return None
            raise
        obj: Obj = self._client.sanitize_for_serialization(pod)
        return obj
