"""Why a Spark driver failed, in its own words: the termination message of its container.

spark-operator 2.5.2 records only "driver container failed with ExitCode: 1, Reason: Error"
(internal/controller/sparkapplication/controller.go). A carstream stage that fails writes
`Reason: message` into its container's termination message file (jobs/carstream/termination.py,
e.g. `KafkaAuthenticationFailed: Kafka refused the login of user carstream-enrich: ...`), and
Kubernetes keeps it in the driver pod's status. The operator reads that pod (the
SparkApplication's `status.driverInfo.podName`) when the application has failed, and the stage
takes the reason and message from here. Plain functions over plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carstream_operator.builders import DRIVER_CONTAINER

# The message shown on the stage: the kubelet keeps up to 4096 bytes, the stage writes less.
MAX_MESSAGE_CHARS = 1024
# `Reason: message` on one line; the reason one CamelCase word, as a condition reason is.
_REASON_LINE = re.compile(r"([A-Z][A-Za-z0-9]{1,63}): (\S[^\n]*)")


@dataclass(frozen=True)
class DriverFailure:
    reason: str
    message: str


def termination_message(pod: Mapping[str, Any]) -> str:
    """The termination message of the driver container of a pod, "" if it has none (yet)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == DRIVER_CONTAINER:
            terminated = (status.get("state") or {}).get("terminated") or {}
            return str(terminated.get("message") or "")
    return ""


def parse(message: str) -> DriverFailure | None:
    """The reason and message of a well-formed termination message, else None (empty, or the
    end of the driver's log, which Kubernetes puts there instead when the driver wrote nothing:
    see builders.pod_template)."""
    match = _REASON_LINE.fullmatch(message.strip())
    if match is None:
        return None
    return DriverFailure(match.group(1), _cut(match.group(2)))


def last_line(message: str) -> str:
    """The last non-empty line of a termination message that is not `Reason: message` (the end
    of the driver's log), cut to a readable length; "" if there is none."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return _cut(lines[-1]) if lines else ""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."
