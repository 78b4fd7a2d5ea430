"""Locations, S3 settings and what is read from a warehouse folder (no server needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carstream.config import S3Settings
from carstream.storage import Location, NothingStored, StorageError, read_parquet


def test_locations_are_buckets_with_prefixes_or_absolute_folders(tmp_path: Path) -> None:
    s3 = Location.parse("s3a://bucket/data/dims/")
    assert (s3.bucket, s3.path, s3.key_prefix) == ("bucket", "data/dims", "data/dims/")
    assert Location.parse("s3://bucket").key_prefix == ""
    assert Location.parse("s3a://bucket").child("enrich").key_prefix == "enrich/"
    assert Location.parse("s3a://bucket/ck").child("enrich").url == "s3a://bucket/ck/enrich"
    local = Location.parse(f"file://{tmp_path}/warehouse")
    assert (local.bucket, local.path) == (None, f"{tmp_path}/warehouse")
    with pytest.raises(StorageError, match="only folders, file:// and s3a:// URLs"):
        Location.parse("hdfs://namenode/data")
    with pytest.raises(StorageError, match="no bucket name"):
        Location.parse("s3a:///data")


def _s3_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    S3Settings.add_arguments(parser)
    return parser.parse_args(argv)


def test_s3_settings_for_an_s3_compatible_server_and_for_aws() -> None:
    server = S3Settings.from_args(_s3_args("--s3-endpoint", "http://127.0.0.1:7070/"), {})
    assert server == S3Settings(endpoint="http://127.0.0.1:7070", region="us-east-1")
    assert server.hadoop_conf() == {
        "fs.s3a.aws.credentials.provider": (
            "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
        ),
        "fs.s3a.endpoint": "http://127.0.0.1:7070",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.endpoint.region": "us-east-1",
    }
    aws = S3Settings.from_args(_s3_args(), {"AWS_REGION": "eu-west-1"})
    assert aws == S3Settings(endpoint=None, region="eu-west-1")
    assert "fs.s3a.endpoint" not in aws.hadoop_conf()
    assert "fs.s3a.path.style.access" not in aws.hadoop_conf()
    from_env = S3Settings.from_args(_s3_args(), {"AWS_ENDPOINT_URL_S3": "http://s3.local:9000"})
    assert from_env.endpoint == "http://s3.local:9000"


def test_an_endpoint_must_be_an_http_url(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _s3_args("--s3-endpoint", "127.0.0.1:7070")
    assert "is not an endpoint URL: use http(s)://host[:port]" in capsys.readouterr().err


def test_a_table_is_its_part_files_without_markers_and_checksums(tmp_path: Path) -> None:
    folder = tmp_path / "cars"
    folder.mkdir()
    pq.write_table(pa.table({"car_id": [1, 2]}), folder / "part-00000-a.snappy.parquet")
    pq.write_table(pa.table({"car_id": [3]}), folder / "part-00001-a.snappy.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000-a.snappy.parquet.crc").write_bytes(b"crc")
    (folder / "_temporary").mkdir()
    pq.write_table(pa.table({"car_id": [99]}), folder / "_temporary" / "part-9.parquet")
    table = read_parquet(str(folder), S3Settings())
    assert table.column("car_id").to_pylist() == [1, 2, 3]
    with pytest.raises(NothingStored, match="no Parquet files there"):
        read_parquet(str(tmp_path / "nowhere"), S3Settings())
