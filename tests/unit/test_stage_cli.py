"""`carstream stage ...`: help for every stage, bad values rejected with usage and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carstream import cli
from carstream.stages import STAGE_MODULES

CARSTREAM = Path(sys.executable).with_name("carstream")


def test_enrich_help_from_the_console_script() -> None:
    result = subprocess.run(
        [str(CARSTREAM), "stage", "enrich", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: carstream stage enrich")
    for option in ("--bootstrap-servers", "--warehouse", "--checkpoint-location", "--trigger"):
        assert option in result.stdout
    assert "CARSTREAM_BOOTSTRAP_SERVERS" in result.stdout


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_every_stage_has_help(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stage", stage, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: carstream stage {stage}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stage", "enrich", "--trigger-interval", "soon"], "'soon' is not an interval"),
        (["stage", "enrich", "--trigger", "sometimes"], "invalid choice: 'sometimes'"),
        (["stage", "detect", "--speed-limit", "fast"], "'fast' is not an integer"),
        (["stage", "detect", "--combinator", "most"], "invalid choice: 'most'"),
        (["stage", "count", "--color-family", "silver"], "is not a color family"),
        (["stage", "dims", "--num-cars", "0"], "must be a positive integer"),
        (["stage", "dims", "--num-cars", "9000001"], "--num-cars 9000001: must be within"),
        (
            ["stage", "count", "--window", "1 minute", "--slide", "2 minutes"],
            "must not be longer than --window",
        ),
        (["stage", "count", "--trigger", "realTime"], "realTime trigger is not supported"),
        (["stage", "detect", "--idle-stop-seconds", "-5"], "must be a positive number"),
        (
            ["stage", "enrich", "--trigger", "availableNow", "--idle-stop-seconds", "30"],
            "--idle-stop-seconds needs --trigger processingTime, not availableNow",
        ),
        (["stage", "nothing"], "invalid choice: 'nothing'"),
    ],
)
def test_bad_value_prints_usage_and_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: carstream stage")
    assert message in err
    assert "Traceback" not in err


def test_bad_environment_value_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARSTREAM_SHUFFLE_PARTITIONS", "many")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stage", "count", "--help"])
    assert "CARSTREAM_SHUFFLE_PARTITIONS" in str(exit_info.value.code)


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["stage", "detect", "--warehouse", "x"], "usage: carstream stage detect"),
        (["stage", "dims", "--bootstrap-servers", "k:9092"], "usage: carstream stage dims"),
        (["stage", "count", "extra"], "usage: carstream stage count"),
        (["broker", "--bogus"], "usage: carstream broker"),
        (["run", "--bogus"], "usage: carstream run"),
    ],
)
def test_unknown_flag_prints_the_usage_of_the_command_called(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    error_line = err.strip().splitlines()[-1]
    assert "error: unrecognized arguments:" in error_line
    assert error_line.endswith(argv[-1])
