"""`python -m carstream_operator.uninstall`: delete a namespace's Pipelines while the operator
still runs, so that nothing is left behind by `helm uninstall`.

kopf keeps a finalizer on every Pipeline and PipelineStage it runs a loop for and removes it
when it sees the object deleted. `helm uninstall` deletes the operator, its RBAC and the
Pipeline at once: the operator is gone (or no longer allowed to patch anything) before it
has released the Pipeline, which then never goes, and neither do its stages, their
SparkApplications and pods. The chart runs this as a pre-delete hook: delete the Pipelines
and their stages, wait until the operator has let them go (the API server's garbage collector
then deletes the applications and pods they own), and, if the operator does not do it within
the time limit (it is not running, say), remove its finalizer itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import kubernetes
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from carstream_operator import resources as r
from carstream_operator.kube_api import load_client_config

PLURALS = (r.PIPELINE_PLURAL, r.STAGE_PLURAL)
POLL_SECONDS = 1.0


def _names(api: CustomObjectsApi, namespace: str, plural: str) -> list[str]:
    listed: dict[str, Any] = api.list_namespaced_custom_object(
        r.GROUP, r.VERSION, namespace, plural
    )
    return [item["metadata"]["name"] for item in listed.get("items") or ()]


def _ignore_missing(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except ApiException as error:
        if error.status != 404:
            raise


def delete_all(api: CustomObjectsApi, namespace: str) -> list[str]:
    """Asks the API server to delete every Pipeline and PipelineStage; returns their names."""
    deleted = []
    for plural in PLURALS:
        for name in _names(api, namespace, plural):
            _ignore_missing(
                api.delete_namespaced_custom_object,
                r.GROUP,
                r.VERSION,
                namespace,
                plural,
                name,
                propagation_policy="Background",
            )
            deleted.append(f"{plural}/{name}")
    return deleted


def remaining(api: CustomObjectsApi, namespace: str) -> list[str]:
    return [f"{plural}/{name}" for plural in PLURALS for name in _names(api, namespace, plural)]


def wait_until_gone(api: CustomObjectsApi, namespace: str, timeout: float) -> list[str]:
    """Waits until no Pipeline or PipelineStage is left; returns what is left at the end."""
    deadline = time.monotonic() + timeout
    left = remaining(api, namespace)
    while left and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        left = remaining(api, namespace)
    return left


def release_finalizers(api: CustomObjectsApi, namespace: str, names: Sequence[str]) -> None:
    """Removes the operator's finalizer from the objects `plural/name` left in `names`."""
    for item in names:
        plural, name = item.split("/", 1)
        try:
            obj = api.get_namespaced_custom_object(r.GROUP, r.VERSION, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                continue
            raise
        finalizers = r.finalizers_without_ours(obj["metadata"])
        if finalizers is None:
            continue
        _ignore_missing(
            api.patch_namespaced_custom_object,
            r.GROUP,
            r.VERSION,
            namespace,
            plural,
            name,
            {"metadata": {"finalizers": finalizers}},
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m carstream_operator.uninstall",
        description="Delete every Pipeline and PipelineStage of a namespace and wait until "
        "the operator has let them go; after --timeout seconds, remove the operator's "
        "finalizer from what is left (the chart's pre-delete hook).",
    )
    parser.add_argument("--namespace", "-n", required=True, help="the release's namespace")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the operator before removing its finalizers (default 120)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout < 0:
        parser.error("--timeout must be zero or more")
    api = CustomObjectsApi(kubernetes.client.ApiClient(load_client_config()))
    deleted = delete_all(api, args.namespace)
    print(f"deleting {len(deleted)} objects: {', '.join(deleted) or 'none'}", flush=True)
    left = wait_until_gone(api, args.namespace, args.timeout)
    if left:
        print(
            f"the operator did not release {', '.join(left)} within {args.timeout:g} s: "
            "removing its finalizer",
            flush=True,
        )
        release_finalizers(api, args.namespace, left)
        left = wait_until_gone(api, args.namespace, 30.0)
    if left:
        print(f"still there: {', '.join(left)}", file=sys.stderr)
        return 1
    print("no Pipeline or PipelineStage left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
