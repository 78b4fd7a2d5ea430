"""The configuration files of containerd, CNI, the kubelets, kube-proxy and CoreDNS: templates
in localcluster/config/ with `${name}` placeholders, written into the run directory."""

from __future__ import annotations

import string
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "config"


def render(template: str, **values: object) -> str:
    """The template filled in; a placeholder without a value is an error, not an empty string."""
    text = (TEMPLATES / template).read_text()
    return string.Template(text).substitute({key: str(value) for key, value in values.items()})


def write(destination: Path, template: str, **values: object) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(render(template, **values))
    return destination
