"""Settings: one dataclass, filled from defaults < TOML file < environment < command line.

Every field becomes a command-line flag (``--heartbeat-interval``), an environment variable
(``PRIVCHAT_HEARTBEAT_INTERVAL``) and a TOML key (``heartbeat_interval``, top level or under a
``[server]`` table), so a new setting is one field here.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
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
        False,
        "keep everything in memory and forget it on exit (tests, benchmarks); the default "
        "persists into DATA_DIR/privchat.db (SQLite, WAL)",
    )
    sqlite_synchronous: str = _f(
        "FULL",
        "FULL: an acknowledged change survives a power loss; NORMAL: it survives a crash of the "
        "server but the last commits may be lost on power loss (faster)",
    )
    memory_window: int = _f(
        250, "recent messages per channel kept in memory; older ones are read from disk"
    )
    log_level: str = _f("INFO", "DEBUG, INFO, WARNING or ERROR")
    use_uvloop: bool = _f(True, "run on uvloop when it is installed")
    # wire limits
    max_body: int = _f(1 << 20, "largest frame body after login, bytes")
    max_body_prelogin: int = _f(16 << 10, "largest frame body before login, bytes")
    # compression and encryption (PROTOCOL.md sections 2.1 and 5)
    compress_threshold: int = _f(
        1024,
        "server frames with bodies this large or larger are compressed when the client accepts it",
    )
    encryption: bool = _f(
        True,
        "accept encrypted logins (RSA key loaded from --rsa-key-file or generated into "
        "the data dir)",
    )
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
    # limits (the issue "Behind a TCP load balancer"; 0 turns a limit off)
    max_connections: int = _f(
        10000, "open connections; one more is answered LOGOUT flow 2 BUSY and closed"
    )
    max_devices_per_user: int = _f(
        10, "sessions one user may have online; one more LOGIN is answered BUSY"
    )
    rate_per_connection: float = _f(
        500.0, "frames per second a connection may send (token bucket; over it reading pauses)"
    )
    burst_per_connection: int = _f(1000, "token bucket size for rate_per_connection, frames")
    rate_limit_grace: float = _f(
        2.0,
        "seconds a connection may stay over its rate (reading paused) before the frames "
        "over the limit are answered RATE_LIMITED",
    )
    rate_per_user: float = _f(
        2000.0,
        "frames per second all online sessions of one user may send together (one token "
        "bucket shared by the user's sessions, after LOGIN; over it reading pauses, then "
        "RATE_LIMITED as for rate_per_connection)",
    )
    burst_per_user: int = _f(4000, "token bucket size for rate_per_user, frames")
    conn_rate_per_ip: float = _f(
        20.0,
        "new connections per second from one client address (after PROXY protocol); "
        "over it a connection is answered RATE_LIMITED and closed. 0 = off (set 0 behind a "
        "balancer without PROXY protocol: every connection then has the balancer's address)",
    )
    conn_burst_per_ip: int = _f(100, "token bucket size for conn_rate_per_ip, connections")
    push_high_water: int = _f(
        1 << 20,
        "bytes in a connection's write buffer above which pushes wait in a bounded "
        "pending list (and reading pauses)",
    )
    push_hard_limit: int = _f(
        8 << 20,
        "bytes a connection may have buffered (written + pending); past it the "
        "session ends with SLOW_CONSUMER",
    )
    slow_consumer_timeout: float = _f(
        10.0, "seconds a connection may stay above push_high_water before SLOW_CONSUMER"
    )
    accept_batch: int = _f(
        512,
        "connections accepted per event-loop turn by the server's own accept loop; 0 = "
        "let the event loop accept (uvloop takes one per turn, slow under load)",
    )
    # behind a load balancer: PROXY protocol, admin HTTP listener, drain
    proxy_protocol: bool = _f(
        False, "expect a PROXY protocol v1/v2 header first on every connection"
    )
    proxy_allowed: str = _f(
        "127.0.0.0/8,::1/128", "comma-separated networks allowed to send PROXY headers"
    )
    proxy_timeout: float = _f(3.0, "seconds a connection has to send its PROXY header")
    admin_port: int = _f(0, "port of the admin HTTP listener (/healthz /readyz /metrics); 0 = off")
    admin_host: str = _f("127.0.0.1", "address of the admin HTTP listener")
    drain_grace: float = _f(
        5.0, "on SIGTERM: seconds the listener stays open while /readyz answers 503"
    )
    drain_window: float = _f(
        10.0, "on SIGTERM: seconds over which sessions are ended with GOING_AWAY"
    )
    shutdown_timeout: float = _f(30.0, "on SIGTERM: the process exits within this many seconds")
    # authentication and login (issue 10): password work, password and encrypted-LOGIN floods.
    # The per-address limits key IPv4 by address and IPv6 by /64 (after PROXY protocol).
    hash_workers: int = _f(
        2, "threads that hash passwords (argon2id), apart from any other blocking work"
    )
    hash_queue: int = _f(
        64,
        "password jobs that may wait for a hash thread; one more is answered BUSY (2) at "
        "once. A job whose connection closed before it starts is dropped",
    )
    login_rate_per_ip: float = _f(
        1.0,
        "password attempts (account/auth/login, account/user/register) per second from one "
        "client address (token bucket); over it RATE_LIMITED (10300). 0 = off",
    )
    login_burst_per_ip: int = _f(20, "token bucket size for login_rate_per_ip, attempts")
    login_free_failures: int = _f(
        5,
        "failed password logins of one account from one address before each further "
        "attempt of that pair waits (1 s, doubling up to login_backoff_max); a success resets",
    )
    login_backoff_max: float = _f(60.0, "longest wait of that backoff, seconds")
    account_fail_rate: float = _f(
        0.05,
        "failed password logins per second one account absorbs from all addresses (token "
        "bucket); while it is empty, attempts from addresses and devices that have not "
        "logged in to the account are RATE_LIMITED. 0 = off",
    )
    account_fail_burst: int = _f(20, "token bucket size for account_fail_rate, failures")
    encrypted_login_rate_per_ip: float = _f(
        20.0,
        "encrypted LOGINs (RSA key transport) per second from one client address (token "
        "bucket), checked before the RSA step; over it RATE_LIMITED (10300). 0 = off",
    )
    encrypted_login_burst_per_ip: int = _f(
        100, "token bucket size for encrypted_login_rate_per_ip, LOGINs"
    )
    # hostile input (issue 10): JSON from the network
    json_max_depth: int = _f(
        32,
        "deepest nesting of arrays and objects in an RPC body, an MS payload envelope or "
        "MessageContent.metadata; deeper is BAD_REQUEST 10105 (1-256)",
    )
    # memory and output bounds (issue 10): reply pages in bytes, per-user message quotas,
    # the frame deadline
    max_reply_bytes: int = _f(
        1 << 20,
        "an MP / sync/get_difference page, and the pushes of the READY catch-up, stop at about "
        "this many bytes of messages (at least one message always; has_more / MN for the rest)",
    )
    rate_bytes_per_user: float = _f(
        float(1 << 20),
        "message bytes per second one user may send with MS and sync/submit (token bucket, "
        "payload + content); over it: RATE_LIMITED (20009). 0 = off",
    )
    burst_bytes_per_user: int = _f(16 << 20, "token bucket size for rate_bytes_per_user, bytes")
    max_stored_bytes_per_user: int = _f(
        256 << 20,
        "bytes the store may hold for one user's messages; a send past it is answered "
        "TOO_LARGE (20606 StorageQuotaExceeded). 0 = off",
    )
    frame_timeout: float = _f(
        30.0,
        "seconds a frame may take from its first byte to its last while the server reads; "
        "past it the session ends with TIMEOUT. 0 = off",
    )
    # accounts and contacts (issue 12)
    welcome_message: str = _f(
        "Welcome to PrivChat!",
        "text of the System message (from user 1, in the user's system channel) a new "
        "account receives on register; empty = none",
    )
    max_qrcodes_per_user: int = _f(
        50,
        "QR codes (and shared contact cards) one user may hold that are not revoked; one more "
        "is refused 20704. A user may create at most 20 times this many in all",
    )
    search_session_ttl: int = _f(
        1800, "seconds a search_session_id of account/search/query stays valid as a source"
    )
    # files (issue 12): the HTTP upload and download listener
    file_port: int = _f(
        0,
        "port of the HTTP file listener (POST /api/app/files/upload, GET /api/app/files/ID); "
        "0 = off (file/request_upload_token then answers UNSUPPORTED)",
    )
    file_host: str = _f("127.0.0.1", "address of the HTTP file listener")
    file_public_url: str = _f(
        "",
        "base URL clients reach the file listener at, e.g. https://files.example.com "
        "(default http://FILE_HOST:FILE_PORT)",
    )
    max_file_size: int = _f(100 << 20, "largest upload, bytes; a larger file_size: 20602")
    file_token_ttl: int = _f(3600, "seconds an upload token is valid")
    file_uploads: int = _f(
        16, "uploads running at once; one more is answered HTTP 503 with Retry-After"
    )
    file_read_timeout: float = _f(
        30.0, "seconds an upload may go without sending a byte before it is dropped"
    )
    # operations (issue 11): the event-loop lag probe
    loop_lag_interval: float = _f(
        0.05,
        "seconds between the event-loop lag probe's timers (how late each runs is the "
        "privchat_loop_lag_seconds histogram on /metrics). 0 = off",
    )

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
        if self.sqlite_synchronous.upper() not in ("FULL", "NORMAL"):
            raise ConfigError("sqlite_synchronous must be FULL or NORMAL")
        if self.memory_window < 1:
            raise ConfigError("memory_window must be at least 1")
        if self.require_encryption and not self.encryption:
            raise ConfigError("require_encryption needs encryption")
        if self.push_hard_limit < self.push_high_water or self.push_high_water < 1024:
            raise ConfigError("need 1024 <= push_high_water <= push_hard_limit")
        if min(self.rate_per_connection, self.rate_per_user, self.conn_rate_per_ip) < 0:
            raise ConfigError("rates must not be negative")
        if min(self.burst_per_connection, self.burst_per_user, self.conn_burst_per_ip) < 1:
            raise ConfigError("bursts must be at least 1")
        if min(self.max_connections, self.max_devices_per_user, self.accept_batch) < 0:
            raise ConfigError(
                "max_connections, max_devices_per_user and accept_batch must not be negative"
            )
        if not 0 <= self.admin_port <= 65535:
            raise ConfigError("admin_port must be 0-65535")
        if min(self.drain_grace, self.drain_window, self.proxy_timeout) < 0:
            raise ConfigError("drain_grace, drain_window and proxy_timeout must not be negative")
        try:
            self.proxy_networks()
        except ValueError as exc:
            raise ConfigError(f"proxy_allowed: {exc}") from None
        if self.token_ttl < 1 or self.refresh_token_ttl < 1:
            raise ConfigError("token_ttl and refresh_token_ttl must be positive")
        if self.hash_workers < 1 or self.hash_queue < 0:
            raise ConfigError("hash_workers must be at least 1 and hash_queue not negative")
        if (
            min(
                self.login_rate_per_ip,
                self.account_fail_rate,
                self.encrypted_login_rate_per_ip,
                self.login_backoff_max,
                self.login_free_failures,
            )
            < 0
        ):
            raise ConfigError("login rates, failures and backoff must not be negative")
        if (
            min(self.login_burst_per_ip, self.account_fail_burst, self.encrypted_login_burst_per_ip)
            < 1
        ):
            raise ConfigError("login bursts must be at least 1")
        if not 1 <= self.json_max_depth <= 256:
            raise ConfigError("json_max_depth must be 1-256")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
        # memory and output bounds
        if self.max_reply_bytes < 1024:
            raise ConfigError("max_reply_bytes must be at least 1024")
        if min(self.rate_bytes_per_user, self.max_stored_bytes_per_user, self.frame_timeout) < 0:
            raise ConfigError(
                "rate_bytes_per_user, max_stored_bytes_per_user and frame_timeout must not be "
                "negative"
            )
        if self.burst_bytes_per_user < 1:
            raise ConfigError("burst_bytes_per_user must be at least 1")
        # accounts and contacts
        if self.max_qrcodes_per_user < 0 or self.search_session_ttl < 1:
            raise ConfigError(
                "max_qrcodes_per_user must not be negative and search_session_ttl must be positive"
            )
        if len(self.welcome_message) > 4096:
            raise ConfigError("welcome_message must be at most 4096 characters")
        # files
        if not 0 <= self.file_port <= 65535:
            raise ConfigError("file_port must be 0-65535")
        if min(self.max_file_size, self.file_token_ttl, self.file_uploads) < 1:
            raise ConfigError("max_file_size, file_token_ttl and file_uploads must be positive")
        if self.file_read_timeout <= 0:
            raise ConfigError("file_read_timeout must be positive")
        if not 0 <= self.loop_lag_interval <= 60:
            raise ConfigError("loop_lag_interval must be 0-60 seconds")

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(n.strip(), strict=False)
            for n in self.proxy_allowed.split(",")
            if n.strip()
        ]

    @property
    def data_path(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir)

    @property
    def file_base_url(self) -> str:
        """Where clients reach the file listener ("" when it is off)."""
        if not self.file_port:
            return ""
        if self.file_public_url:
            return self.file_public_url.rstrip("/")
        host = f"[{self.file_host}]" if ":" in self.file_host else self.file_host
        return f"http://{host}:{self.file_port}"


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
                flag,
                dest=field.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=field.name,
                default=None,
                metavar="N" if isinstance(field.default, int | float) else "VALUE",
                help=help_text,
            )


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
    path = (
        config_file
        or (getattr(args, "config", None) if args else None)
        or environ.get(ENV_PREFIX + "CONFIG")
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
