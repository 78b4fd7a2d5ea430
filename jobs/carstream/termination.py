"""Why a stage failed, in one line, where Kubernetes shows it: the termination message.

When a container ends, the kubelet copies the file at its `terminationMessagePath` (default
`/dev/termination-log`, which it creates writable by any user) into the pod's status
(`status.containerStatuses[].state.terminated.message`, at most 4096 bytes). spark-operator
only says that the driver container failed with exit code 1; the carstream operator reads
this message from the driver pod and shows its reason on the PipelineStage and in an Event.

The line is `Reason: message`: the reason one CamelCase word of `REASONS`, the message one
line that says what failed and, for Kafka, the client's own error. `classify` finds them
from the exception a stage ended with; `write` puts the line into the file. Outside
Kubernetes the file does not exist and nothing is written (the path can be changed with
CARSTREAM_TERMINATION_MESSAGE_PATH, for tests).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaError

from carstream.config import ENV_PREFIX

PATH_ENV = ENV_PREFIX + "TERMINATION_MESSAGE_PATH"
DEFAULT_PATH = "/dev/termination-log"
MAX_BYTES = 4096  # what the kubelet keeps of the file
MAX_MESSAGE_CHARS = 1000

KAFKA_AUTHENTICATION_FAILED = "KafkaAuthenticationFailed"
KAFKA_AUTHORIZATION_FAILED = "KafkaAuthorizationFailed"
KAFKA_UNREACHABLE = "KafkaBrokerUnreachable"
DIMENSION_MISSING = "DimensionMissing"
STORAGE_UNUSABLE = "StorageUnusable"
STAGE_ERROR = "StageError"
REASONS = (
    KAFKA_AUTHENTICATION_FAILED,
    KAFKA_AUTHORIZATION_FAILED,
    KAFKA_UNREACHABLE,
    DIMENSION_MISSING,
    STORAGE_UNUSABLE,
    STAGE_ERROR,
)

# Java's Kafka client (Spark's Kafka source and sink): its exceptions appear fully qualified
# in the text of the Spark or Py4J exception that wraps them.
_JAVA_KAFKA_ERROR = re.compile(r"org\.apache\.kafka\.common\.errors\.(\w+Exception)(?:: ([^\n]*))?")
# librdkafka (the generator): error code names, as in KafkaError{code=NAME,...}.
_AUTHENTICATION_CODES = frozenset({"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"})
_AUTHORIZATION_CODES = frozenset(
    {
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    }
)
_UNREACHABLE_CODES = frozenset(
    {"_MSG_TIMED_OUT", "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE"}
)
_KAFKA_ERROR_TEXT = re.compile(r'KafkaError\{code=(\w+),val=-?\d+,str="(.*?)"\}', re.DOTALL)
# Exceptions of carstream that mean "run `carstream stage dims` first".
_DIMENSION_MISSING_CLASSES = frozenset({"DataMissing", "CarsMissing"})
# The warehouse or a checkpoint cannot be used: carstream.storage's error (boto3), or s3a's
# (a refused request, a missing bucket, an unreachable endpoint) in a Spark exception's text.
_STORAGE_CLASSES = frozenset({"StorageError"})
_S3A_ERROR = re.compile(
    r"(java\.nio\.file\.AccessDeniedException|org\.apache\.hadoop\.fs\.s3a\.\w+Exception)"
    r"(?:: ([^\n]*))?"
)
_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+\s*$")


@dataclass(frozen=True)
class Termination:
    """Why a stage ended: one of REASONS and a one-line message."""

    reason: str
    message: str

    def line(self) -> str:
        return f"{self.reason}: {self.message}"

    @property
    def described(self) -> bool:
        """Whether the reason tells the whole story (else the traceback is worth logging)."""
        return self.reason != STAGE_ERROR


@dataclass(frozen=True)
class _KafkaError:
    """One Kafka client error found in an exception: librdkafka's code name or Java's class."""

    name: str
    text: str

    def describe(self) -> str:
        return f"{self.name}: {self.text}" if self.text else self.name


def classify(error: BaseException, *, kafka_user: str | None = None) -> Termination:
    """The reason and message of the failure `error` (and the exceptions it was raised from).
    Never raises: a stage must end with its own error, not with one of its description."""
    try:
        reason, message = _reason_and_message(error, kafka_user)
    except Exception as failure:  # e.g. a Py4J call on a JVM that is gone
        reason, message = STAGE_ERROR, f"{type(error).__name__} ({failure!r} describing it)"
    return Termination(reason, one_line(message))


def _reason_and_message(error: BaseException, kafka_user: str | None) -> tuple[str, str]:
    chain = list(_chain(error))
    found = [kafka_error for item in chain for kafka_error in _kafka_errors(item)]
    user = f"user {kafka_user}" if kafka_user else "the stage's user"
    for kafka_error in found:
        if _is_authentication(kafka_error):
            return (
                KAFKA_AUTHENTICATION_FAILED,
                f"Kafka refused the login of {user}: {kafka_error.describe()}",
            )
    for kafka_error in found:
        if _is_authorization(kafka_error):
            return (
                KAFKA_AUTHORIZATION_FAILED,
                f"Kafka denied {user} what its ACLs do not allow: {kafka_error.describe()}",
            )
    for item in chain:
        if _class_names(item) & _DIMENSION_MISSING_CLASSES:
            return DIMENSION_MISSING, str(item)
        if _class_names(item) & _STORAGE_CLASSES:
            return STORAGE_UNUSABLE, str(item)
        s3a = _S3A_ERROR.search(str(item))
        if s3a:
            return STORAGE_UNUSABLE, f"{s3a.group(1)}: {(s3a.group(2) or '').strip()}"
    for kafka_error in found:
        if _is_unreachable(kafka_error):
            return (
                KAFKA_UNREACHABLE,
                f"Kafka did not answer within the client's timeouts: {kafka_error.describe()}",
            )
    first_line = str(error).strip().split("\n", 1)[0]
    name = type(error).__name__
    return STAGE_ERROR, f"{name}: {first_line}" if first_line else name


def write(termination: Termination, path: str | None = None) -> bool:
    """Writes the termination message into the file Kubernetes reads (PATH_ENV, else
    DEFAULT_PATH) if that file exists; True when written. Never raises: a stage that failed
    must fail with its own error, not with one about this file."""
    target = path or os.environ.get(PATH_ENV) or DEFAULT_PATH
    data = termination.line().encode("utf-8")[:MAX_BYTES]
    try:
        # No O_CREAT: the file is the one the kubelet made; elsewhere there is none to write.
        descriptor = os.open(target, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return False
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
    except OSError:
        return False
    return True


def one_line(text: str) -> str:
    """`text` on one line, without Spark's SQLSTATE suffix, at most MAX_MESSAGE_CHARS long."""
    flat = _SQLSTATE.sub("", " ".join(text.split()))
    if len(flat) > MAX_MESSAGE_CHARS:
        flat = flat[: MAX_MESSAGE_CHARS - 3] + "..."
    return flat


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    item: BaseException | None = error
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        yield item
        item = item.__cause__ or item.__context__


def _class_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _kafka_errors(error: BaseException) -> Iterator[_KafkaError]:
    """The Kafka errors an exception carries: a confluent-kafka KafkaError in its arguments,
    or Java Kafka exceptions (and librdkafka error texts) in its text."""
    for argument in error.args:
        if isinstance(argument, KafkaError):
            yield _KafkaError(argument.name(), argument.str())
    text = str(error)
    for match in _KAFKA_ERROR_TEXT.finditer(text):
        yield _KafkaError(match.group(1), match.group(2))
    for match in _JAVA_KAFKA_ERROR.finditer(text):
        yield _KafkaError(match.group(1), (match.group(2) or "").strip())


def _is_authentication(error: _KafkaError) -> bool:
    return error.name in _AUTHENTICATION_CODES or error.name.endswith("AuthenticationException")


def _is_authorization(error: _KafkaError) -> bool:
    return error.name in _AUTHORIZATION_CODES or error.name.endswith("AuthorizationException")


def _is_unreachable(error: _KafkaError) -> bool:
    return error.name in _UNREACHABLE_CODES or error.name == "TimeoutException"
