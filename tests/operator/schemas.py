"""CRD schemas as strict JSON Schemas, to check built objects offline.

Unknown fields are errors (the API server would prune them silently); CEL rules are not
evaluated here (the API server tests do that).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from carstream import toolchain


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _strict(value) for key, value in node.items() if key != "default"}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    preserve = schema.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        schema["additionalProperties"] = False
    for key in [k for k in schema if k.startswith("x-kubernetes-")]:
        del schema[key]
    return schema


@cache
def _validator(path: Path) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(path.read_text())
    schema = _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def spark_application_validator() -> jsonschema.Draft7Validator:
    path = toolchain.upstream_crds_dir() / "spark-operator"
    return _validator(path / "sparkoperator.k8s.io_sparkapplications.yaml")


def carstream_validator(plural: str) -> jsonschema.Draft7Validator:
    return _validator(toolchain.carstream_crds_dir() / f"carstream.io_{plural}.yaml")


def errors(validator: jsonschema.Draft7Validator, obj: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
