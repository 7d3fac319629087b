"""The LitmusError hierarchy: an HTTP status, a stable code and a human message."""

from __future__ import annotations

from typing import Any


class LitmusError(Exception):
    """Base of every error the API answers with; one middleware renders them."""

    status = 500
    code = "internal_error"

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


class Unauthorized(LitmusError):
    status, code = 401, "unauthorized"


class Forbidden(LitmusError):
    status, code = 403, "forbidden"


class NotFound(LitmusError):
    status, code = 404, "not_found"


class MethodNotAllowed(LitmusError):
    status, code = 405, "method_not_allowed"


class Conflict(LitmusError):
    status, code = 409, "conflict"


class PreconditionFailed(LitmusError):
    status, code = 412, "precondition_failed"


class PayloadTooLarge(LitmusError):
    status, code = 413, "payload_too_large"


class ValidationFailed(LitmusError):
    status, code = 422, "validation_error"


class Unavailable(LitmusError):
    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers["Retry-After"] = str(retry_after)
