"""Where the warehouse and the checkpoints live, seen from Python (not from Spark).

A location is a folder (`/data`, `file:///data`, `.carstream/warehouse`) or an S3 URL
(`s3a://bucket/prefix`). Folders go through the file system; S3 through boto3, with the
endpoint and region of `S3Settings` and credentials from the standard AWS chain only.

What it does: check that a location is reachable and writable (creating the bucket on
request), read a Parquet table (the generator's cars), list the streaming checkpoints under
a root, and delete one stage's checkpoint (the documented way to start a stage over).
Every failure is a `StorageError` whose message is one line naming the location and the cause.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from carstream.config import S3_SCHEMES, S3Settings

PROBE_PREFIX = ".carstream-write-check-"
# What Spark and Hadoop leave next to data files: markers, checksums, temporary folders.
_NOT_DATA = ("_", ".")


class StorageError(RuntimeError):
    """A location that cannot be used; the message says which one and why."""


class NothingStored(StorageError):
    """The location is usable but holds nothing of what was asked for."""


@dataclass(frozen=True)
class Location:
    """A parsed location: a bucket and a key prefix, or a local folder (bucket None)."""

    url: str
    bucket: str | None
    path: str  # S3: the key prefix without slashes at either end; local: an absolute path

    @classmethod
    def parse(cls, url: str) -> Location:
        for scheme in S3_SCHEMES:
            if url.startswith(scheme):
                bucket, _, prefix = url[len(scheme) :].partition("/")
                if not bucket:
                    raise StorageError(f"{url}: no bucket name (use s3a://BUCKET/PREFIX)")
                return cls(url.rstrip("/"), bucket, prefix.strip("/"))
        if "://" in url and not url.startswith("file://"):
            raise StorageError(f"{url}: only folders, file:// and s3a:// URLs are supported")
        return cls(url.rstrip("/"), None, os.path.abspath(url.removeprefix("file://")))

    def child(self, name: str) -> Location:
        path = f"{self.path}/{name}" if self.path or self.bucket is None else name
        return Location(f"{self.url}/{name}", self.bucket, path)

    @property
    def key_prefix(self) -> str:
        """Keys under this location start with this (S3)."""
        return f"{self.path}/" if self.path else ""


@dataclass(frozen=True)
class StoredFile:
    name: str  # relative to the listed location, with `/` between folders
    size: int
    modified: datetime


class Store(Protocol):
    def check(self, location: Location, *, create_bucket: bool = False) -> str: ...
    def files(self, location: Location) -> list[StoredFile]: ...
    def read(self, location: Location, name: str) -> bytes: ...
    def delete(self, location: Location) -> int: ...


def store_for(location: Location, s3: S3Settings) -> Store:
    return S3Store(s3) if location.bucket is not None else LocalStore()


# ---------------------------------------------------------------------------------------------
# Folders


class LocalStore:
    def check(self, location: Location, *, create_bucket: bool = False) -> str:
        folder = Path(location.path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StorageError(f"{location.url}: cannot write there ({error.strerror})") from None
        return f"{location.url}: folder writable"

    def files(self, location: Location) -> list[StoredFile]:
        root = Path(location.path)
        found = []
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                try:
                    stat = path.stat()
                except FileNotFoundError:  # a running query's temporary file, gone meanwhile
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                found.append(StoredFile(path.relative_to(root).as_posix(), stat.st_size, modified))
        return sorted(found, key=lambda file: file.name)

    def read(self, location: Location, name: str) -> bytes:
        return Path(location.path, name).read_bytes()

    def delete(self, location: Location) -> int:
        count = len(self.files(location))
        shutil.rmtree(location.path, ignore_errors=True)
        return count


# ---------------------------------------------------------------------------------------------
# S3


@functools.lru_cache(maxsize=8)
def s3_client(s3: S3Settings) -> Any:
    """The boto3 S3 client for `s3`, made once per process (boto3 clients are thread-safe and
    slow to make; its credentials are resolved from the AWS chain at first use): path-style
    requests to an S3-compatible endpoint, a short connect timeout and few retries, so that an
    unreachable endpoint fails within seconds."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if s3.endpoint else "auto"},
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 2},
    )
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region, config=config)


class S3Store:
    def __init__(self, s3: S3Settings) -> None:
        self.s3 = s3
        self.client = s3_client(s3)
        self.where = s3.endpoint or "AWS S3"

    def check(self, location: Location, *, create_bucket: bool = False) -> str:
        """Reachable (the bucket exists and answers) and writable (an object can be put and
        deleted under the location's prefix)."""
        bucket = self._bucket(location)
        created = ""
        with self._errors(location, "checking"):
            exists = self._bucket_exists(bucket)
        if not exists:
            if not create_bucket:
                raise StorageError(
                    f"{location.url}: bucket '{bucket}' does not exist at {self.where} "
                    "(create it with --create-bucket)"
                )
            with self._errors(location, "creating the bucket"):
                self.client.create_bucket(Bucket=bucket, **self._location_constraint())
            created = f", bucket '{bucket}' created"
        probe = f"{location.key_prefix}{PROBE_PREFIX}{uuid.uuid4().hex}"
        with self._errors(location, "writing"):
            self.client.put_object(Bucket=bucket, Key=probe, Body=b"")
        with self._errors(location, "deleting what it wrote"):
            self.client.delete_object(Bucket=bucket, Key=probe)
        return f"{location.url}: reachable and writable at {self.where}{created}"

    def files(self, location: Location) -> list[StoredFile]:
        bucket = self._bucket(location)
        found = []
        with self._errors(location, "listing"):
            for item in self._objects(bucket, location.key_prefix):
                name = item["Key"][len(location.key_prefix) :]
                if name and not name.endswith("/"):  # `/` ends a folder marker, not a file
                    found.append(StoredFile(name, item["Size"], item["LastModified"]))
        return found

    def read(self, location: Location, name: str) -> bytes:
        bucket = self._bucket(location)
        with self._errors(location, f"reading {name}"):
            body: bytes = self.client.get_object(Bucket=bucket, Key=f"{location.key_prefix}{name}")[
                "Body"
            ].read()
        return body

    def delete(self, location: Location) -> int:
        bucket = self._bucket(location)
        deleted = 0
        with self._errors(location, "deleting"):
            keys = [item["Key"] for item in self._objects(bucket, location.key_prefix)]
            for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys a call
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                answer = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
                )
                for error in answer.get("Errors", []):
                    raise StorageError(
                        f"{location.url}: could not delete {error['Key']} "
                        f"({error.get('Code')}: {error.get('Message')})"
                    )
                deleted += len(batch)
        return deleted

    # -- helpers

    @staticmethod
    def _bucket(location: Location) -> str:
        assert location.bucket is not None, "an S3Store is for s3a:// locations"
        return location.bucket

    def _objects(self, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            yield from page.get("Contents", [])

    def _bucket_exists(self, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as error:
            code = _error_code(error)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            if code != "403":
                raise
            # A HEAD answer has no body: a listing says whether the keys, the signature or
            # the permissions were refused (and succeeds for a read-only account).
            self.client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        return True

    def _location_constraint(self) -> dict[str, Any]:
        region = self.s3.region
        if not region or region == "us-east-1":
            return {}
        return {"CreateBucketConfiguration": {"LocationConstraint": region}}

    @contextmanager
    def _errors(self, location: Location, doing: str) -> Iterator[None]:
        """Turns boto3's exceptions into one-line StorageErrors naming bucket, endpoint and
        cause; others pass."""
        try:
            yield
        except StorageError:
            raise
        except Exception as error:
            message = self._describe(error, location, doing)
            if message is None:
                raise
            raise StorageError(f"{location.url}: {message}") from None

    def _describe(self, error: BaseException, location: Location, doing: str) -> str | None:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        bucket, where = location.bucket, self.where
        if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
            return f"cannot reach the S3 endpoint {where} ({error})"
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return (
                f"no AWS credentials for bucket '{bucket}' (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a web identity)"
            )
        if not isinstance(error, ClientError):
            return None
        code = _error_code(error)
        detail = error.response.get("Error", {}).get("Message") or code
        if code in ("404", "NoSuchBucket", "NotFound"):
            return f"bucket '{bucket}' does not exist at {where} ({code})"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"):
            return f"{where} refused the credentials while {doing} ({code}: {detail})"
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return f"access denied to bucket '{bucket}' while {doing} at {where} ({code}: {detail})"
        if code == "AuthorizationHeaderMalformed":
            return f"{where} expects another region than {self.s3.region} ({detail})"
        return f"{doing} bucket '{bucket}' at {where} failed ({code}: {detail})"


def _error_code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# ---------------------------------------------------------------------------------------------
# Parquet tables and checkpoints


def read_parquet(url: str, s3: S3Settings, columns: Sequence[str] | None = None) -> pa.Table:
    """The table at `url` (a folder of Parquet files as Spark writes it), its files in name
    order. Raises StorageError when there is no Parquet file there."""
    location = Location.parse(url)
    store = store_for(location, s3)
    files = [file for file in store.files(location) if _is_data(file.name)]
    if not files:
        raise NothingStored(f"{url}: no Parquet files there")
    # One thread: the tables are small, and a process that exits (e.g. on a usage error)
    # while Arrow's thread pool winds down was aborted by std::terminate in ~1 of 12 runs.
    tables = [
        pq.read_table(
            pa.BufferReader(store.read(location, file.name)), columns=columns, use_threads=False
        )
        for file in files
    ]
    return pa.concat_tables(tables)


def _is_data(name: str) -> bool:
    return name.endswith(".parquet") and not any(
        part.startswith(_NOT_DATA) for part in name.split("/")
    )


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint of one streaming query under a checkpoint root: `<stage>` for a stage with
    one query, `<stage>/<query>` for each query of a stage with several (count)."""

    name: str
    files: int
    size: int
    latest_batch: int | None  # the newest micro-batch planned (offsets/), None before the first
    committed_batch: int | None  # the newest micro-batch committed (commits/)
    modified: datetime

    @property
    def stage(self) -> str:
        return self.name.partition("/")[0]

    def line(self) -> str:
        planned = "no batch yet" if self.latest_batch is None else f"batch {self.latest_batch}"
        committed = "none" if self.committed_batch is None else str(self.committed_batch)
        return (
            f"{self.name}: {planned}, committed {committed}; {self.files} files, "
            f"{self.size:,} bytes, last written {self.modified:%Y-%m-%d %H:%M:%S} UTC"
        )


def checkpoints(root_url: str, s3: S3Settings) -> list[Checkpoint]:
    """The checkpoint of each query under `root_url` (folders with Spark's `metadata` file,
    one per query), by name."""
    root = Location.parse(root_url)
    files = store_for(root, s3).files(root)
    folders = sorted(
        {
            file.name.rpartition("/")[0]
            for file in files
            if file.name.endswith("/metadata") and "/state/" not in f"/{file.name}"
        },
        key=lambda name: (-name.count("/"), name),  # the innermost first
    )
    by_folder: dict[str, list[StoredFile]] = {}
    for file in files:
        folder = next((f for f in folders if file.name.startswith(f"{f}/")), None)
        if folder is not None:
            by_folder.setdefault(folder, []).append(file)
    return [_checkpoint(name, by_folder[name]) for name in sorted(by_folder)]


def _checkpoint(name: str, files: list[StoredFile]) -> Checkpoint:
    def newest(log: str) -> int | None:
        prefix = f"{name}/{log}/"
        batches = [
            int(file.name[len(prefix) :])
            for file in files
            if file.name.startswith(prefix) and file.name[len(prefix) :].isdigit()
        ]
        return max(batches, default=None)

    return Checkpoint(
        name=name,
        files=len(files),
        size=sum(file.size for file in files),
        latest_batch=newest("offsets"),
        committed_batch=newest("commits"),
        modified=max(file.modified for file in files),
    )


def delete_checkpoint(root_url: str, stage: str, s3: S3Settings) -> int:
    """Deletes `<root>/<stage>`: that stage starts over at its next run (from the topic's
    --starting-offsets) while the other stages keep their positions. Returns the number of
    files deleted; raises StorageError when there is no checkpoint of that stage."""
    if not stage or "/" in stage or stage in (".", ".."):
        raise StorageError(f"{stage!r} is not a stage name")
    root = Location.parse(root_url)
    present = checkpoints(root_url, s3)
    if stage not in {checkpoint.stage for checkpoint in present}:
        names = ", ".join(sorted({checkpoint.stage for checkpoint in present})) or "none"
        raise StorageError(
            f"{root.url}: no checkpoint of stage '{stage}' there (checkpoints: {names})"
        )
    return store_for(root, s3).delete(root.child(stage))


def delete_tree(url: str, s3: S3Settings) -> int:
    """Deletes everything under `url` (a folder or an S3 prefix); returns the files deleted."""
    location = Location.parse(url)
    return store_for(location, s3).delete(location)


def committed_offsets(checkpoint_url: str, s3: S3Settings) -> dict[str, dict[str, int]]:
    """The Kafka offsets a streaming query has committed, per topic and partition: those of
    its newest committed micro-batch (offsets/<n> for the newest n in commits/), which it
    has fully written; {} before its first batch."""
    location = Location.parse(checkpoint_url)
    store = store_for(location, s3)
    committed = [
        int(file.name) for file in store.files(location.child("commits")) if file.name.isdigit()
    ]
    if not committed:
        return {}
    text = store.read(location.child("offsets"), str(max(committed))).decode()
    offsets: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:  # "v1", the batch's metadata, then one line per source
        source = json.loads(line) if line.startswith("{") else {}
        for topic, partitions in source.items():
            offsets[topic] = {partition: int(offset) for partition, offset in partitions.items()}
    return offsets
