"""kubectl as the cluster's admin (a client certificate in system:masters)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from carstream import toolchain
from localcluster.layout import RunDir
from localcluster.processes import ClusterError


class Kubectl:
    def __init__(self, run: RunDir) -> None:
        self.kubeconfig = run.admin_kubeconfig

    def command(self, *args: str) -> list[str]:
        return [str(toolchain.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]

    def run(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}"
            )
        return result

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        return self.run(*args, input=input, timeout=timeout).stdout

    def ok(self, *args: str) -> bool:
        """True when `kubectl ARGS` succeeds (a readiness probe)."""
        try:
            return self.run(*args, timeout=15, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def get_json(self, *args: str) -> Any:
        return json.loads(self(*args, "--output=json"))

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        items = manifest if isinstance(manifest, list) else [manifest]
        self(
            "apply",
            "--filename=-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
