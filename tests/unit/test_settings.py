"""Settings: read once, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from litmus.services.auth import TOKEN_FILE, Authenticator, ensure_admin_token
from litmus.settings import Settings, SettingsError, parse_token


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.port == 8000 and s.host == "127.0.0.1" and s.workers == 1
    assert s.recompute_interval_s == 5.0
    assert s.data_dir == Path(".litmus")
    assert s.admin_tokens == ()


def test_values_are_read() -> None:
    s = Settings.from_env({
        "DATABASE_URL": "postgresql://u@h/db", "LITMUS_PORT": "9000", "LITMUS_HOST": "0.0.0.0",
        "LITMUS_WORKERS": "4", "LITMUS_RECOMPUTE_INTERVAL_S": "2.5", "LITMUS_LOG_LEVEL": "debug",
        "ADMIN_API_TOKENS": "alice:secret-aaaa, secret-bbbb", "CLIENT_API_TOKENS": "r:cccccccc",
    })
    assert s.database_url == "postgresql://u@h/db"
    assert (s.port, s.host, s.workers, s.recompute_interval_s) == (9000, "0.0.0.0", 4, 2.5)
    assert s.log_level == "DEBUG"
    assert next(t.name for t in s.admin_tokens) == "alice"
    assert s.admin_tokens[1].secret == "secret-bbbb"
    assert s.client_tokens[0].name == "r"


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("LITMUS_PORT", "eighty", "not an integer"),
        ("LITMUS_PORT", "70000", "between"),
        ("LITMUS_WORKERS", "0", "between"),
        ("LITMUS_RECOMPUTE_INTERVAL_S", "soon", "not a number"),
        ("LITMUS_LOG_LEVEL", "loud", "one of"),
        ("DATABASE_URL", "mysql://x", "postgresql://"),
        ("ADMIN_API_TOKENS", "short", "shorter than 8"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: value})
    assert var in str(info.value)
    assert words in str(info.value)


def test_bare_token_name_is_derived_from_hash() -> None:
    t = parse_token("s3cret-value")
    assert t.name.startswith("token-") and "s3cret" not in t.name
    assert parse_token("s3cret-value").name == t.name
    assert "s3cret" not in repr(t)


def test_authenticator_kinds() -> None:
    auth = Authenticator((parse_token("a:admin-secret"),), (parse_token("c:client-secret"),))
    admin, client = auth.identify("admin-secret"), auth.identify("client-secret")
    assert admin is not None and admin.kind == "admin" and admin.name == "a"
    assert client is not None and client.kind == "client"
    assert auth.identify("admin-secre") is None
    assert auth.identify("") is None


def test_generated_admin_token_persists_with_mode_0600(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    s1, secret1 = ensure_admin_token(s)
    assert secret1 and s1.admin_tokens[0].secret == secret1
    path = tmp_path / "data" / TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    _s2, secret2 = ensure_admin_token(s)
    assert secret2 == secret1
    configured = Settings(data_dir=tmp_path / "x", admin_tokens=(parse_token("k:kkkkkkkk"),))
    s3, secret3 = ensure_admin_token(configured)
    assert secret3 is None and s3 is configured
