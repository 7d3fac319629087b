"""The database handles the layers above `litmus/db` pass around without looking inside.

Services and handlers hold a connection or the pool only to hand it back to a `litmus.db`
function; naming the types here keeps asyncpg an import of `litmus/db` alone
(docs/DEVELOPING.md, "Why SQL only in `db/`")."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

Connection: TypeAlias = asyncpg.Connection
Pool: TypeAlias = asyncpg.Pool
Record: TypeAlias = asyncpg.Record
