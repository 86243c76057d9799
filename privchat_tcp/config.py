"""Settings: one dataclass, filled from defaults < TOML file < environment < command line.

Every field becomes a command-line flag (``--heartbeat-interval``), an environment variable
(``PRIVCHAT_HEARTBEAT_INTERVAL``) and a TOML key (``heartbeat_interval``, top level or under a
``[server]`` table), so a new setting is one field here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["Settings", "add_arguments", "load_settings"]

ENV_PREFIX = "PRIVCHAT_"


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class Settings:
    host: str = _f("127.0.0.1", "address to listen on")
    port: int = _f(9001, "TCP port to listen on (0 = any free port)")
    data_dir: str = _f("./privchat-data", "directory for the server key, the JWT secret and data")
    memory_only: bool = _f(
        True,
        "keep everything in memory (the only store today; persistence comes with its own issue)",
    )
    log_level: str = _f("INFO", "DEBUG, INFO, WARNING or ERROR")
    use_uvloop: bool = _f(True, "run on uvloop when it is installed")
    # wire limits
    max_body: int = _f(1 << 20, "largest frame body after login, bytes")
    max_body_prelogin: int = _f(16 << 10, "largest frame body before login, bytes")
    # compression and encryption (PROTOCOL.md sections 2.1 and 5)
    compress_threshold: int = _f(
        1024, "server frames with bodies this large or larger are compressed when the client "
        "accepts it")
    encryption: bool = _f(
        True, "accept encrypted logins (RSA key loaded from --rsa-key-file or generated into "
        "the data dir)")
    rsa_key_file: str = _f("", "PEM file of the server's RSA key (default DATA_DIR/server_key.pem)")
    require_encryption: bool = _f(False, "refuse plaintext logins with CRYPTO")
    # sessions
    login_timeout: float = _f(10.0, "seconds a new connection has to LOGIN")
    heartbeat_interval: int = _f(30, "seconds; a session silent for twice this ends with TIMEOUT")
    jwt_secret: str = _f("", "HS256 secret for tokens (default: generated into the data dir)")
    token_ttl: int = _f(604800, "access token lifetime, seconds (PrivChat: 7 days)")
    refresh_token_ttl: int = _f(2592000, "refresh token lifetime, seconds")
    argon2_time_cost: int = _f(2, "argon2id passes for password hashing")
    argon2_memory_kib: int = _f(19456, "argon2id memory per hash, KiB")
    # messaging
    large_group_threshold: int = _f(
        500, "groups with more members get MN notifications and pull with MP"
    )
    max_group_members: int = _f(5000, "largest group")
    catchup_push_limit: int = _f(
        500, "per channel, at most this many missed messages are pushed at READY; more: MN + MP"
    )
    max_pull_limit: int = _f(1000, "largest MP / get_difference page")
    revoke_window: int = _f(172800, "seconds a sender may revoke (PrivChat: 48 h)")
    max_subscriptions: int = _f(100, "SUB channels per session")
    dedup_retention: int = _f(604800, "seconds an MS idempotency key is kept (7 days)")
    typing_interval: float = _f(0.5, "seconds between typing broadcasts per user and channel")
    snowflake_datacenter_id: int = _f(1, "Snowflake datacenter id, 0-31")
    snowflake_machine_id: int = _f(1, "Snowflake machine id, 0-31")

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be 0-65535")
        if self.max_body_prelogin > self.max_body:
            raise ConfigError("max_body_prelogin must not exceed max_body")
        if self.max_body < 1024 or self.max_body > (1 << 31):
            raise ConfigError("max_body must be between 1 KiB and 2 GiB")
        if self.heartbeat_interval < 1 or self.login_timeout <= 0:
            raise ConfigError("heartbeat_interval and login_timeout must be positive")
        for name in ("snowflake_datacenter_id", "snowflake_machine_id"):
            if not 0 <= getattr(self, name) <= 31:
                raise ConfigError(f"{name} must be 0-31")
        if not self.memory_only:
            raise ConfigError(
                "persistence is not built yet: only the in-memory store exists (--memory-only)"
            )
        if self.require_encryption and not self.encryption:
            raise ConfigError("require_encryption needs encryption")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")

    @property
    def data_path(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir)


def _convert(field: dataclasses.Field[Any], value: Any, source: str) -> Any:
    kind: type = type(field.default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {field.name} must be a {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per setting; defaults stay None so lower layers show through."""
    parser.add_argument("--config", metavar="FILE", help="TOML file with settings")
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        env = ENV_PREFIX + field.name.upper()
        help_text = f"{field.metadata['help']} (env {env}; default {field.default!r})"
        if isinstance(field.default, bool):
            parser.add_argument(
                flag, dest=field.name, default=None, action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=field.name, default=None, metavar="N"
                                if isinstance(field.default, int | float) else "VALUE",
                                help=help_text)


def load_settings(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from a TOML file, the environment, parsed arguments and overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    path = config_file or (getattr(args, "config", None) if args else None) or environ.get(
        ENV_PREFIX + "CONFIG"
    )
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        table = data.get("server", data)
        for key, value in table.items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _convert(fields[key], value, path)
    for name, field in fields.items():
        env = environ.get(ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = _convert(field, env, ENV_PREFIX + name.upper())
    if args is not None:
        for name, field in fields.items():
            value = getattr(args, name, None)
            if value is not None:
                values[name] = _convert(field, value, "--" + name.replace("_", "-"))
    for name, value in (overrides or {}).items():
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = value
    settings = Settings(**values)
    settings.validate()
    return settings


def settings_names() -> Sequence[str]:
    return [f.name for f in dataclasses.fields(Settings)]
