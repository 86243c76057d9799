"""Settings come from defaults < TOML < environment < command line."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from privchat_tcp.config import Settings, add_arguments, load_settings
from privchat_tcp.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_precedence(tmp_path: pathlib.Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[server]\nport = 7000\nheartbeat_interval = 11\nlog_level = "DEBUG"\n')
    env = {"PRIVCHAT_PORT": "7100", "PRIVCHAT_MAX_BODY": "200000"}
    s = load_settings(parse("--config", str(toml), "--max-body", "400000"), env)
    assert (s.port, s.heartbeat_interval, s.log_level, s.max_body) == (7100, 11, "DEBUG", 400000)
    assert load_settings(parse(), {}).port == Settings().port == 9001


def test_booleans_and_errors(tmp_path: pathlib.Path) -> None:
    assert load_settings(parse(), {"PRIVCHAT_USE_UVLOOP": "no"}).use_uvloop is False
    assert load_settings(parse("--no-use-uvloop"), {}).use_uvloop is False
    with pytest.raises(ConfigError):
        load_settings(parse(), {"PRIVCHAT_PORT": "ninety"})
    with pytest.raises(ConfigError):
        load_settings(parse(), {"PRIVCHAT_PORT": "70000"})
    assert load_settings(parse(), {}).memory_only is False  # persistence is the default
    assert load_settings(parse("--memory-only"), {}).memory_only is True
    with pytest.raises(ConfigError):
        load_settings(parse(), {"PRIVCHAT_SQLITE_SYNCHRONOUS": "OFF"})
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError):
        load_settings(parse("--config", str(bad)), {})
    with pytest.raises(ConfigError):
        load_settings(parse(), {"PRIVCHAT_CONFIG": str(tmp_path / "missing.toml")})
