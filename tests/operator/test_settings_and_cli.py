"""The operator's settings and its command line: bad input gets usage, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from carstream_operator.__main__ import build_parser, settings_from
from carstream_operator.settings import Settings, SettingsError


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CARSTREAM_OPERATOR_NAMESPACES": "a, b",
            "CARSTREAM_OPERATOR_METRICS_PORT": "9999",
            "CARSTREAM_OPERATOR_RESYNC_SECONDS": "2.5",
            "CARSTREAM_OPERATOR_SPARK_VERSION": "4.2.1",
        }
    )
    assert settings.namespaces == ("a", "b")
    assert settings.metrics_port == 9999
    assert settings.resync_seconds == 2.5
    assert settings.spark_version == "4.2.1"
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("CARSTREAM_OPERATOR_METRICS_PORT", "http", "is not a int"),
        ("CARSTREAM_OPERATOR_LIVENESS_PORT", "70000", "not a port"),
        ("CARSTREAM_OPERATOR_RESYNC_SECONDS", "0", "must be positive"),
    ],
)
def test_bad_settings_are_named(variable: str, value: str, error: str) -> None:
    with pytest.raises(SettingsError, match=error):
        Settings.from_env({variable: value})


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARSTREAM_OPERATOR_NAMESPACES", "from-env")
    monkeypatch.setenv("CARSTREAM_OPERATOR_METRICS_PORT", "1234")
    args = build_parser().parse_args(["-n", "one", "-n", "two", "--liveness-port", "0"])
    settings = settings_from(args)
    assert settings.namespaces == ("one", "two")
    assert settings.liveness_port == 0
    assert settings.metrics_port == 1234
    assert settings_from(build_parser().parse_args(["-A"])).namespaces == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-port", "http"], "is not a port number"),
        (["--liveness-port", "-1"], "is not a port number"),
        (["-n", "a", "-A"], "not allowed with argument"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_print_usage(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "carstream_operator", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: carstream-operator")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_environment_variable_prints_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "carstream_operator"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"CARSTREAM_OPERATOR_RESYNC_SECONDS": "soon", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "CARSTREAM_OPERATOR_RESYNC_SECONDS='soon' is not a float" in result.stderr
    assert "Traceback" not in result.stderr
