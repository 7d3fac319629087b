"""The transient database errors are a family (SQLSTATE classes), and the family never shrank."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from litmus.db.errors import TRANSIENT, is_transient, transient_sqlstate

# The twelve classes hand-listed as TRANSIENT in litmus/db/events.py before the family existed:
# every one of them must still be transient.
BEFORE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def instance(cls: Any) -> Exception:
    """An error as asyncpg raises it (a PostgreSQL error carries its SQLSTATE)."""
    if issubclass(cls, asyncpg.PostgresError):
        made: Exception = asyncpg.PostgresError.new({"C": cls.sqlstate, "M": "test"})
        assert type(made) is cls
        return made
    plain: Exception = cls("test")
    return plain


@pytest.mark.parametrize("cls", BEFORE, ids=lambda c: c.__name__)
def test_each_error_transient_before_still_is(cls: type[Exception]) -> None:
    assert issubclass(cls, TRANSIENT)
    assert is_transient(instance(cls))


@pytest.mark.parametrize("cls", [
    asyncpg.UniqueViolationError,  # 23505: a conflict, answered 409
    asyncpg.PostgresSyntaxError,  # 42601: a bug, answered 500
    asyncpg.UndefinedTableError,  # 42P01: a missing migration does not heal by waiting
    asyncpg.DiskFullError,  # 53100: class 53, but needs an operator
    asyncpg.CheckViolationError,
], ids=lambda c: c.__name__)
def test_permanent_errors_are_not_transient(cls: type[Exception]) -> None:
    assert not issubclass(cls, TRANSIENT)
    assert not is_transient(instance(cls))


def test_plain_exceptions_are_not_transient() -> None:
    assert not is_transient(ValueError("bad"))
    assert not is_transient(KeyError("x"))
    assert is_transient(TimeoutError())  # an OSError (asyncio's too): the socket, not the query
    assert is_transient(ConnectionResetError())


def test_the_tuple_and_the_sqlstate_rule_agree_on_every_asyncpg_class() -> None:
    classes: list[Any] = [c for c in vars(asyncpg.exceptions).values()
               if isinstance(c, type) and issubclass(c, asyncpg.PostgresError)
               and isinstance(getattr(c, "sqlstate", None), str)]
    assert len(classes) > 200  # guard against a vacuous pass
    disagree = [c.__name__ for c in classes
                if issubclass(c, TRANSIENT) != transient_sqlstate(c.sqlstate)]
    assert disagree == []


def test_whole_classes_are_in_the_family() -> None:
    # Members of the transient classes that the hand-written list did not name.
    for cls in (asyncpg.ConnectionFailureError, asyncpg.ConnectionDoesNotExistError,
                asyncpg.StatementCompletionUnknownError, asyncpg.IdleSessionTimeoutError):
        assert is_transient(instance(cls)), cls.__name__


def test_a_code_asyncpg_has_no_class_for_is_judged_by_its_sqlstate() -> None:
    newer = asyncpg.PostgresError.new({"C": "57P09", "M": "a newer server's shutdown"})
    assert type(newer) is asyncpg.exceptions.UnknownPostgresError
    assert is_transient(newer)
    unknown = asyncpg.PostgresError.new({"C": "22P99", "M": "a newer data error"})
    assert not is_transient(unknown)
    assert not transient_sqlstate(None)
