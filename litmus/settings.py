"""Settings read once from the environment into a frozen object; nothing else reads os.environ."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token with the name the audit log records for it."""

    name: str
    secret: str = field(repr=False)


def parse_token(raw: str) -> Token:
    """Parse `name:secret` or a bare secret (named after its hash)."""
    raw = raw.strip()
    if ":" in raw:
        name, secret = raw.split(":", 1)
        name, secret = name.strip(), secret.strip()
        if name and secret:
            return Token(name, secret)
        raw = secret or name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return Token(f"token-{digest}", raw)


def _tokens(env: Mapping[str, str], var: str) -> tuple[Token, ...]:
    raw = env.get(var, "")
    parts = [p for p in (s.strip() for s in raw.split(",")) if p]
    tokens = tuple(parse_token(p) for p in parts)
    for t in tokens:
        if len(t.secret) < 8:
            raise SettingsError(f"{var}: token '{t.name}' is shorter than 8 characters")
    return tokens


def _int(env: Mapping[str, str], var: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{var}={raw!r} must be between {lo} and {hi}")
    return value


def _float(env: Mapping[str, str], var: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{var}={raw!r} must be between {lo} and {hi}")
    return value


def _choice(env: Mapping[str, str], var: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip()
    upper = value.upper() if choices == LOG_LEVELS else value.lower()
    if upper not in choices:
        raise SettingsError(f"{var}={raw!r} must be one of {', '.join(choices)}")
    return upper


def _url(env: Mapping[str, str], var: str) -> str | None:
    raw = (env.get(var) or "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"{var}={raw!r} must be an http:// or https:// URL")
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a Litmus process."""

    database_url: str | None = None
    data_dir: Path = Path(".litmus")
    admin_tokens: tuple[Token, ...] = ()
    client_tokens: tuple[Token, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    # The fast lane's port (litmus/api/fastlane.py): None is the main port + 1, 0 turns it off.
    assign_port: int | None = None
    workers: int = 1
    recompute_interval_s: float = 5.0
    log_level: str = "INFO"
    log_format: str = "text"
    max_body_bytes: int = 16 * 1024 * 1024
    registry_reload_s: float = 30.0
    cors_origins: tuple[str, ...] = ()
    ingest_flush_events: int = 5000
    ingest_flush_age_ms: float = 5.0
    ingest_buffer_events: int = 200_000
    ingest_buffer_bytes: int = 256 * 1024 * 1024
    ingest_wait_s: float = 10.0
    # A connection that sends no complete request head for this long (idle keep-alive or slow
    # headers alike) is closed; a request body that does not arrive within body_timeout_s gets 408.
    idle_timeout_s: float = 15.0
    body_timeout_s: float = 30.0
    # Where a guardrail trip is POSTed as JSON (docs/OPERATIONS.md); None: no webhook.
    alert_webhook_url: str | None = None

    @property
    def fast_lane_port(self) -> int | None:
        """Where the fast lane listens, or None when it is off (LITMUS_ASSIGN_PORT=0, or the
        default with a main port of 0 or 65535)."""
        if self.assign_port is None:
            return self.port + 1 if 0 < self.port < 65535 else None
        return self.assign_port or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every LITMUS_* variable (and DATABASE_URL, *_API_TOKENS)."""
        env = os.environ if env is None else env
        db = (env.get("DATABASE_URL") or "").strip() or None
        if db is not None and not db.startswith(("postgres://", "postgresql://")):
            raise SettingsError(
                f"DATABASE_URL={db.split('@')[-1]!r} must start with postgresql:// or postgres://"
            )
        data_dir = Path((env.get("LITMUS_DATA_DIR") or "").strip() or ".litmus")
        if data_dir.exists() and not data_dir.is_dir():
            raise SettingsError(f"LITMUS_DATA_DIR={str(data_dir)!r} exists and is not a folder")
        admin = _tokens(env, "ADMIN_API_TOKENS")
        client = _tokens(env, "CLIENT_API_TOKENS")
        host = (env.get("LITMUS_HOST") or "").strip() or "127.0.0.1"
        cors = tuple(o.strip() for o in env.get("LITMUS_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            database_url=db,
            data_dir=data_dir,
            admin_tokens=admin,
            client_tokens=client,
            host=host,
            port=_int(env, "LITMUS_PORT", 8000, 0, 65535),
            assign_port=(None if not (env.get("LITMUS_ASSIGN_PORT") or "").strip()
                         else _int(env, "LITMUS_ASSIGN_PORT", 0, 0, 65535)),
            workers=_int(env, "LITMUS_WORKERS", 1, 1, 64),
            recompute_interval_s=_float(env, "LITMUS_RECOMPUTE_INTERVAL_S", 5.0, 0.1, 3600.0),
            log_level=_choice(env, "LITMUS_LOG_LEVEL", "INFO", LOG_LEVELS),
            log_format=_choice(env, "LITMUS_LOG_FORMAT", "text", ("text", "json")),
            max_body_bytes=_int(env, "LITMUS_MAX_BODY_BYTES", 16 * 1024 * 1024, 1024, 1 << 30),
            registry_reload_s=_float(env, "LITMUS_REGISTRY_RELOAD_S", 30.0, 0.5, 3600.0),
            cors_origins=cors,
            ingest_flush_events=_int(env, "LITMUS_INGEST_FLUSH_EVENTS", 5000, 1, 1_000_000),
            ingest_flush_age_ms=_float(env, "LITMUS_INGEST_FLUSH_AGE_MS", 5.0, 0.0, 10_000.0),
            ingest_buffer_events=_int(env, "LITMUS_INGEST_BUFFER_EVENTS", 200_000, 100, 100_000_000),
            ingest_buffer_bytes=_int(
                env, "LITMUS_INGEST_BUFFER_BYTES", 256 * 1024 * 1024, 1 << 16, 1 << 40
            ),
            ingest_wait_s=_float(env, "LITMUS_INGEST_WAIT_S", 10.0, 0.1, 600.0),
            idle_timeout_s=_float(env, "LITMUS_IDLE_TIMEOUT_S", 15.0, 0.5, 3600.0),
            body_timeout_s=_float(env, "LITMUS_BODY_TIMEOUT_S", 30.0, 0.5, 3600.0),
            alert_webhook_url=_url(env, "LITMUS_ALERT_WEBHOOK_URL"),
        )

    def with_tokens(self, admin: tuple[Token, ...]) -> Settings:
        """A copy with these admin tokens (used when serve generates one)."""
        return replace(self, admin_tokens=admin)
