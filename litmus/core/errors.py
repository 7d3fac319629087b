"""The base of the LitmusError tree and the errors the domain itself raises.

They live in core so that pure code (the lifecycle, the definition checks) can refuse a request
with the same error the API answers, and one middleware renders it: no layer in between has
to translate. They are plain data: a status, a stable code, a message. The errors about the
transport (auth, body limits, timeouts, draining) are added in litmus/errors.py, which is the
import path for the whole tree everywhere outside core.
"""

from __future__ import annotations

from typing import Any


class LitmusError(Exception):
    """Base of every error the API answers with; one middleware renders them."""

    status = 500
    code = "internal_error"

    # True when the connection must close after the answer (an unread body is left behind).
    close = False

    def __init__(
        self,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON error body: {"error": {"code", "message", "fields"?}}."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            err["fields"] = self.fields
        if self.extra:
            err.update(self.extra)
        return {"error": err}


class BadRequest(LitmusError):
    status, code = 400, "bad_request"


class NotFound(LitmusError):
    status, code = 404, "not_found"


class Conflict(LitmusError):
    status, code = 409, "conflict"


class PreconditionFailed(LitmusError):
    status, code = 412, "precondition_failed"


class ValidationFailed(LitmusError):
    status, code = 422, "validation_error"
