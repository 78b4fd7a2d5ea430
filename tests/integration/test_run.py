"""`carstream run`: the whole pipeline from one command, stopped by its duration or Ctrl+C,
leaving no process behind; a second run resumes on the same state with the same dims."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pyarrow.parquet as pq

from tests.integration.processes import (
    alive,
    descendants,
    kill_group,
    run_carstream,
    start_carstream,
    wait_until,
)

PROGRESS = re.compile(
    r"produced ([\d,]+) .* enriched ([\d,]+) .* alerts ([\d,]+) .* dead letters ([\d,]+)"
)
FAST = [
    "--seed",
    "7",
    "--trigger-interval",
    "1 second",
    "--progress-interval",
    "2",
    "--window",
    "1 minute",
    "--slide",
    "10 seconds",
]


def _last_progress(output: str) -> tuple[int, ...]:
    lines = PROGRESS.findall(output)
    assert lines, output
    return tuple(int(number.replace(",", "")) for number in lines[-1])


def _cars(state: Path) -> list[dict[str, int]]:
    return list(pq.read_table(state / "warehouse" / "dims" / "cars").to_pylist())


def test_run_shows_windows_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "run.out"
    counter_every = ["--count-trigger-interval", "2 seconds"]
    process = start_carstream(["run", "--state-dir", str(state), *FAST, *counter_every], log)
    children: set[int] = set()
    try:

        def windows_shown() -> bool:
            children.update(descendants(process.pid))
            assert process.poll() is None, log.read_text()
            return "alert counts, batch" in log.read_text()

        wait_until(windows_shown, 240, "the counter's first windows")
        process.send_signal(signal.SIGINT)  # Ctrl+C
        assert process.wait(120) == 0, log.read_text()
    finally:
        kill_group(process)
    output = log.read_text()
    assert len(children) >= 2, "the run should have started a broker and Spark"
    assert not any(alive(pid) for pid in children), "a process outlived carstream run"
    assert "stop requested: stopping" in output
    assert "(trigger every 1 second, count every 2 seconds;" in output
    produced, enriched, alerts, dead_letters = _last_progress(output)
    assert 0 < alerts <= enriched <= produced and dead_letters == 0, output
    assert "num_of_silver" in output
    assert "Traceback" not in output
    first_cars = _cars(state)
    assert len(first_cars) == 20

    # Again on the same state, for a set duration: broker data, topics and checkpoints are
    # reused, and the same seed writes the same cars.
    log = tmp_path / "again.out"
    process = start_carstream(["run", "--state-dir", str(state), "--duration", "5", *FAST], log)
    try:
        assert process.wait(240) == 0, log.read_text()
    finally:
        kill_group(process)
    output = log.read_text()
    assert "(0 created)" in output, "the topics of the first run should still exist"
    assert "5 s are over: stopping" in output
    assert _last_progress(output)[0] >= produced + 5 * 20 * 0.9
    assert _cars(state) == first_cars

    # enrich and detect as separate queries would start their own checkpoints from the start
    # of the topics: refused, saying how to go on.
    result = run_carstream(["run", "--state-dir", str(state), "--no-fuse", "--duration", "5"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "of a run with --fuse (enrich-detect): run with --fuse again" in result.stderr


def test_run_refuses_bad_options() -> None:
    result = run_carstream(["run", "--duration", "soon"])
    assert result.returncode == 2
    assert "usage: carstream run" in result.stderr
    result = run_carstream(["run", "--window", "1 minute", "--slide", "2 minutes"])
    assert result.returncode == 2
    assert "must not be longer than --window" in result.stderr


def test_run_with_storage_s3_keeps_warehouse_and_checkpoints_in_its_s3_server(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    log = tmp_path / "run.out"
    process = start_carstream(
        ["run", "--storage", "s3", "--state-dir", str(state), "--duration", "25", *FAST], log
    )
    children: set[int] = set()
    try:

        def ended() -> bool:
            children.update(descendants(process.pid))
            return process.poll() is not None

        wait_until(ended, 300, f"carstream run --storage s3 to end (log: {log})")
        assert process.returncode == 0, log.read_text()
    finally:
        kill_group(process)
    output = log.read_text()
    assert re.search(r"S3 server ready at http://127\.0\.0\.1:\d+", output), output
    assert "s3a://carstream/warehouse: reachable and writable" in output
    assert "dimensions written under s3a://carstream/warehouse/dims" in output
    assert "checkpoints under s3a://carstream/checkpoints" in output
    assert "stopping the S3 server" in output
    assert not any(alive(pid) for pid in children), "a process outlived carstream run"
    produced, enriched, alerts, _ = _last_progress(output)
    assert 0 < alerts <= enriched <= produced, output
    # Everything went to the bucket (the server's files), nothing to local folders.
    bucket = state / "s3" / "carstream"
    assert len(_cars(bucket)) == 20
    for stage in ("enrich-detect", "count/windows"):
        assert list((bucket / "checkpoints" / stage / "commits").iterdir()), stage
    assert not (state / "warehouse").exists() and not (state / "checkpoints").exists()


def test_run_refuses_storage_s3_with_locations_of_its_own() -> None:
    result = run_carstream(["run", "--storage", "s3", "--warehouse", "s3a://mine/warehouse"])
    assert result.returncode == 2
    assert result.stderr.startswith("usage: carstream run")
    assert "--storage s3 starts its own S3 server" in result.stderr
