"""Bearer tokens: admin tokens may do everything, client tokens assign, send events, read config."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from litmus.settings import Settings, Token, parse_token

ADMIN = "admin"
CLIENT = "client"
TOKEN_FILE = "admin_token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name and kind."""

    name: str
    kind: str


class Authenticator:
    """Looks a presented secret up among the configured tokens in constant time.

    A token configured as `name:secret` is accepted presented either way: as the bare secret,
    or whole, as it stands in ADMIN_API_TOKENS or in the data directory's admin_token file."""

    def __init__(self, admin: tuple[Token, ...], client: tuple[Token, ...]) -> None:
        self._tokens: list[tuple[bytes, Principal]] = []
        for tokens, kind in ((admin, ADMIN), (client, CLIENT)):
            for t in tokens:
                principal = Principal(t.name, kind)
                self._tokens.append((t.secret.encode(), principal))
                self._tokens.append((f"{t.name}:{t.secret}".encode(), principal))

    def identify(self, presented: str) -> Principal | None:
        """The principal whose secret equals `presented`, comparing every token in full."""
        try:
            raw = presented.encode()
        except UnicodeEncodeError:
            # A header byte that is not UTF-8 arrives as a lone surrogate: no token has one.
            return None
        found: Principal | None = None
        for secret, principal in self._tokens:
            # No early exit: the time taken must not depend on which token matched.
            if hmac.compare_digest(secret, raw) and found is None:
                found = principal
        return found


def new_token() -> str:
    """A fresh random secret (URL-safe, 32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def ensure_admin_token(settings: Settings) -> tuple[Settings, str | None]:
    """With ADMIN_API_TOKENS unset, load or create the data directory's admin token (mode 0600).

    Returns the settings to serve with and the generated secret (None when configured)."""
    if settings.admin_tokens:
        return settings, None
    path: Path = settings.data_dir / TOKEN_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raw = path.read_text(encoding="utf-8").strip()
    else:
        raw = f"admin:{new_token()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(raw + "\n")
    os.chmod(path, 0o600)
    token = parse_token(raw)
    return settings.with_tokens((token,)), token.secret
