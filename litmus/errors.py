"""The LitmusError hierarchy: an HTTP status, a stable code and a human message.

The base and the domain's own errors (400, 404, 409, 412, 422) are defined in litmus/core/errors.py,
so that pure core code can raise them too; they are re-exported here, and this module adds the
errors about the transport. Import any of them from here outside core.
"""

from __future__ import annotations

from typing import Any

from litmus.core.errors import (
    BadRequest,
    Conflict,
    LitmusError,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "ClientGone",
    "Conflict",
    "Forbidden",
    "LitmusError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RequestTimeout",
    "ShuttingDown",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]


class Unauthorized(LitmusError):
    status, code = 401, "unauthorized"


class Forbidden(LitmusError):
    status, code = 403, "forbidden"


class MethodNotAllowed(LitmusError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(LitmusError):
    status, code = 408, "request_timeout"
    close = True


class PayloadTooLarge(LitmusError):
    status, code = 413, "payload_too_large"


class BodyTooLarge(PayloadTooLarge):
    """A body over the byte limit: the rest of it is never read, so the connection closes."""

    close = True


class ClientGone(LitmusError):
    """The client closed the connection before its request was read: nobody gets this answer.

    Counted under nginx's status 499 ("client closed request"), not as a server error."""

    status, code = 499, "client_closed_request"


class Unavailable(LitmusError):
    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers["Retry-After"] = str(retry_after)


class ShuttingDown(Unavailable):
    """A request that arrived after this process began to drain: retry on another."""

    close = True
