"""SQL expressions for the database clock, so leases and due times never depend on a host's clock.

PostgreSQL uses ``statement_timestamp()``; SQLite renders UTC text in the format SQLAlchemy stores.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f000'"  # six fractional digits, as SQLAlchemy writes datetimes


class db_now(FunctionElement[Any]):
    """The database's current time."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"


class db_now_plus(FunctionElement[Any]):
    """The database's current time plus a number of seconds (a bound parameter or column)."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now_plus"


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return "statement_timestamp()"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return f"strftime({_SQLITE_FORMAT}, 'now')"


@compiles(db_now_plus, "postgresql")
def _pg_now_plus(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = list(element.clauses)
    return f"(statement_timestamp() + make_interval(secs => {compiler.process(seconds, **kw)}))"


@compiles(db_now_plus, "sqlite")
def _sqlite_now_plus(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = list(element.clauses)
    modifier = f"printf('%+.6f seconds', {compiler.process(seconds, **kw)})"
    return f"strftime({_SQLITE_FORMAT}, 'now', {modifier})"
