"""`carstream storage` against the real S3 server: clear one-line errors that write nothing,
bucket creation on request, checkpoints listed and one stage's checkpoint deleted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from carstream.broker import free_port
from carstream.config import S3Settings
from carstream.s3_server import S3Server
from carstream.storage import s3_client
from tests.fixtures.s3 import files_under, stored_keys
from tests.integration.processes import run_carstream


def _storage(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run_carstream(["storage", *args], timeout=60, env=env)
    return result.returncode, result.stdout, result.stderr


def _check(
    s3: S3Settings, bucket: str, *more: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    assert s3.endpoint is not None
    return _storage(
        "check",
        "--warehouse",
        f"s3a://{bucket}/warehouse",
        "--checkpoint-root",
        f"s3a://{bucket}/checkpoints",
        "--s3-endpoint",
        s3.endpoint,
        *more,
        env=env,
    )


def _one_line_error(code: int, stderr: str) -> str:
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("carstream storage check: s3a://")
    return lines[0]


def _bucket_names(s3: S3Settings) -> set[str]:
    return {bucket["Name"] for bucket in s3_client(s3).list_buckets()["Buckets"]}


def test_a_missing_bucket_is_named_and_not_created(s3: S3Settings) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    line = _one_line_error(*_check(s3, missing)[::2])
    assert f"bucket '{missing}' does not exist at {s3.endpoint}" in line
    assert "--create-bucket" in line
    assert missing not in _bucket_names(s3)


def test_create_bucket_on_request_leaves_nothing_but_the_bucket(s3: S3Settings) -> None:
    wanted = f"created-{uuid.uuid4().hex[:10]}"
    code, stdout, _ = _check(s3, wanted, "--create-bucket")
    assert code == 0
    assert f"s3a://{wanted}/warehouse: reachable and writable at {s3.endpoint}" in stdout
    assert f"bucket '{wanted}' created" in stdout
    assert wanted in _bucket_names(s3)
    assert stored_keys(s3, wanted) == [], "the write check deletes what it wrote"


def test_a_read_only_account_is_told_access_denied_and_writes_nothing(
    s3_server: S3Server, s3: S3Settings, bucket: str
) -> None:
    reader = f"reader-{uuid.uuid4().hex[:8]}"
    s3_server.create_user(reader, "reader-secret", role="user")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [reader]},
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    s3_client(s3).put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    env = {"AWS_ACCESS_KEY_ID": reader, "AWS_SECRET_ACCESS_KEY": "reader-secret"}

    line = _one_line_error(*_check(s3, bucket, env=env)[::2])
    assert f"access denied to bucket '{bucket}' while writing at {s3.endpoint}" in line
    assert "AccessDenied" in line
    assert stored_keys(s3, bucket) == []


def test_wrong_credentials_are_named_as_such(s3: S3Settings, bucket: str) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    line = _one_line_error(*_check(s3, bucket, env=env)[::2])
    assert f"{s3.endpoint} refused the credentials" in line
    assert "SignatureDoesNotMatch" in line
    assert stored_keys(s3, bucket) == []


def test_an_unreachable_endpoint_fails_fast_with_its_address(s3: S3Settings) -> None:
    nobody = S3Settings(endpoint=f"http://127.0.0.1:{free_port()}", region=s3.region)
    line = _one_line_error(*_check(nobody, "carstream")[::2])
    assert f"cannot reach the S3 endpoint {nobody.endpoint}" in line


def test_bad_arguments_print_the_usage_of_storage_check() -> None:
    code, _, stderr = _storage("check", "--s3-endpoint", "localhost:7070")
    assert code == 2
    assert stderr.startswith("usage: carstream storage check")
    assert "is not an endpoint URL" in stderr


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_checkpoints_are_listed_and_reset_deletes_one_stage_only(
    where: str, s3: S3Settings, bucket: str, tmp_path: Path
) -> None:
    """A checkpoint layout as Spark writes it (metadata, offsets, commits, state) under
    <root>/<pipeline>/<stage>, in a folder or a bucket."""
    files = {
        "enrich/metadata": '{"id":"a"}',
        "enrich/offsets/0": "v1",
        "enrich/offsets/1": "v1",
        "enrich/commits/0": "v1",
        "count/windows/metadata": '{"id":"b"}',
        "count/windows/offsets/0": "v1",
        "count/windows/commits/0": "v1",
        "count/windows/state/0/0/1.delta": "x",
        "count/windows/state/0/_metadata/metadata": "x",
        "count/dead-letters/metadata": '{"id":"c"}',
    }
    if where == "folder":
        root = str(tmp_path / "checkpoints")
        for name, text in files.items():
            path = tmp_path / "checkpoints" / "demo" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    else:
        root = f"s3a://{bucket}/checkpoints"
        for name, text in files.items():
            s3_client(s3).put_object(Bucket=bucket, Key=f"checkpoints/demo/{name}", Body=text)
    s3_args = ["--s3-endpoint", s3.endpoint or ""]

    code, stdout, stderr = _storage(
        "checkpoints", "--checkpoint-root", root, "--pipeline", "demo", *s3_args
    )
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "count/dead-letters",
        "count/windows",
        "enrich",
    ]
    assert lines[1].startswith("count/windows: batch 0, committed 0; 5 files")
    assert lines[2].startswith("enrich: batch 1, committed 0; 4 files")
    assert lines[0].startswith("count/dead-letters: no batch yet, committed none; 1 files")

    code, _, stderr = _storage(
        "reset", "detect", "--checkpoint-root", root, "--pipeline", "demo", *s3_args
    )
    assert code == 1
    assert "no checkpoint of stage 'detect' there (checkpoints: count, enrich)" in stderr

    code, stdout, stderr = _storage(
        "reset", "count", "--checkpoint-root", root, "--pipeline", "demo", *s3_args
    )
    assert code == 0, stderr
    assert "count: deleted (6 files)" in stdout
    if where == "folder":
        remaining = files_under(tmp_path / "checkpoints" / "demo")
    else:
        remaining = [key.removeprefix("checkpoints/demo/") for key in stored_keys(s3, bucket)]
    assert sorted(remaining) == sorted(name for name in files if name.startswith("enrich/"))
