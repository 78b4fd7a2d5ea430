"""Every rendered object checked against its real schema, offline.

Kubernetes built-ins: the JSON schemas that `kubernetes-validate` bundles for Kubernetes 1.37
(strict variant: unknown fields are errors). Custom resources: the `openAPIV3Schema` of their
CRDs (Strimzi and spark-operator from the shared upstream folder, carstream's from the chart),
turned into strict JSON Schema. CEL rules (`x-kubernetes-validations`) are not evaluated here:
the real API server does that in test_install.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from carstream import toolchain

KUBERNETES_VERSION = "1.37"

GroupVersionKind = tuple[str, str]  # ("kafka.strimzi.io/v1", "Kafka")


def crd_files() -> list[Path]:
    upstream = toolchain.upstream_crds_dir()
    files = sorted(upstream.glob("*/*.yaml")) + sorted(
        toolchain.carstream_crds_dir().glob("*.yaml")
    )
    return [path for path in files if path.name != "kustomization.yaml"]


def _structural_to_json_schema(node: Any) -> Any:
    """A CRD structural schema as JSON Schema, strict about unknown fields like the API server."""
    if isinstance(node, list):
        return [_structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _structural_to_json_schema(value) for key, value in node.items()}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    preserve = schema.pop("x-kubernetes-preserve-unknown-fields", False)
    if schema.pop("x-kubernetes-embedded-resource", False):
        schema.setdefault("properties", {})
        for field in ("apiVersion", "kind"):
            schema["properties"].setdefault(field, {"type": "string"})
        schema["properties"].setdefault("metadata", {"type": "object"})
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        schema["additionalProperties"] = False
    for key in [k for k in schema if k.startswith("x-kubernetes-")]:
        del schema[key]
    return schema


@cache
def custom_resource_schemas() -> Mapping[GroupVersionKind, Mapping[str, Any]]:
    schemas: dict[GroupVersionKind, Mapping[str, Any]] = {}
    for path in crd_files():
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", False):
                    continue
                openapi = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = _structural_to_json_schema(openapi)
    return schemas


def errors(obj: Mapping[str, Any]) -> list[str]:
    """What is wrong with one object, as `Kind/name: path: message` lines; empty when valid."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    custom = custom_resource_schemas().get(key)
    if custom is not None:
        validator = jsonschema.Draft7Validator(custom)
        return [
            f"{where}: {'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        ]
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(map(str, error.path)) or "<root>"
        return [f"{where}: {path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{where}: no schema: {error.message}"]
    return []


def all_errors(objects: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for obj in objects:
        yield from errors(obj)
