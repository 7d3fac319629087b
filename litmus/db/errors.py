"""Which database errors are transient: "the database is not there right now", not "never".

A transient error is retried (ingest keeps its events and flushes again) or answered 503 with
Retry-After (the API), never dropped or reported as a server bug. The family is named by
PostgreSQL's SQLSTATE classes (PostgreSQL documentation, Appendix A "Error Codes"), which
asyncpg mirrors as a class hierarchy, rather than listed error by error.
"""

from __future__ import annotations

import asyncpg

# Whole SQLSTATE classes in which every condition passes with time: 08 connection exception,
# 40 transaction rollback (serialization failure, deadlock: redo the transaction), 57 operator
# intervention (admin or crash shutdown, cannot connect now, query canceled).
TRANSIENT_CLASSES = frozenset({"08", "40", "57"})
# Single conditions of classes that are otherwise permanent: 53300 too many connections (disk
# full or out of memory in class 53 need an operator), 55P03 lock not available.
TRANSIENT_STATES = frozenset({"53300", "55P03"})

# For `except`: the same family as asyncpg's classes, and the client-side failures.
TRANSIENT: tuple[type[Exception], ...] = (
    OSError,  # the socket: includes TimeoutError and ConnectionError
    asyncpg.InterfaceError,  # e.g. "connection is closed"
    asyncpg.InternalClientError,  # e.g. "cannot switch to state": a connection broken mid-COPY
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.TransactionRollbackError,  # class 40
    asyncpg.OperatorInterventionError,  # class 57
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.LockNotAvailableError,  # 55P03
)


# Any error PostgreSQL itself answered with (the statement was refused, not the connection lost).
REFUSED: type[Exception] = asyncpg.PostgresError


def transient_sqlstate(sqlstate: str | None) -> bool:
    """Whether a SQLSTATE code belongs to the transient family."""
    if not sqlstate:
        return False
    return sqlstate[:2] in TRANSIENT_CLASSES or sqlstate in TRANSIENT_STATES


def is_transient(exc: BaseException) -> bool:
    """Whether an error means the database is unreachable or busy right now (retry later).

    Beyond TRANSIENT, a PostgreSQL error whose SQLSTATE asyncpg has no class for (a newer
    server's code in a transient class arrives as UnknownPostgresError) is judged by its code."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return transient_sqlstate(getattr(exc, "sqlstate", None))
    return False
