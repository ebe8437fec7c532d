"""One list shape for every list endpoint (CONTRACT §3): `{"items": [...], "next_cursor": "..." | null}`.

A route declares `limit: Limit = 50, cursor: Cursor = None`, builds its filtered SELECT, and calls
`fetch_page(session, stmt, Keyset("referrals", (created_at, id)), limit, cursor)`. The helper orders by
the keyset (the natural key of the list, ending in a unique column), continues after the cursor's
position with a row-value comparison, reads `limit + 1` rows to know whether another page exists, and
returns the page and the next cursor. Filtering stays in the route's SQL.

A cursor is opaque to clients: base64url of `{"l": <list>, "k": [<key values>]}`. One that does not
decode, names another list, or carries values of the wrong type or out of range is a 422 problem, never a
5xx (a NUL byte in a string or an integer beyond int64 would otherwise reach PostgreSQL).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Query
from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import Problem

T = TypeVar("T")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_CURSOR_CHARS = 512
_MAX_TEXT = 400
_INT64 = 2**63

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"At most {MAX_LIMIT} items per page")]
Cursor = Annotated[
    str | None, Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` of the previous page (opaque)")
]


class Page(BaseModel, Generic[T]):
    """A page of a list; `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None = PydanticField(default=None, description="`cursor` of the next page; null at the end")


def bad_cursor() -> Problem:
    return Problem(
        422,
        "The request has invalid fields.",
        errors=[{"loc": ["query", "cursor"], "msg": "not a cursor of this list"}],
    )


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise TypeError(f"a keyset value must be a datetime, date, uuid, int or str, not {type(value).__name__}")


def _parse_datetime(raw: Any) -> datetime:
    parsed = datetime.fromisoformat(_text(raw))
    if parsed.tzinfo is None:
        raise ValueError("a cursor time has no offset")
    return parsed


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or "\x00" in raw or len(raw) > _MAX_TEXT:
        raise ValueError("not a text value")
    return raw


def _integer(raw: Any) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not -_INT64 <= raw < _INT64:
        raise ValueError("not an int64")
    return raw


_PARSERS: Mapping[type, Callable[[Any], Any]] = {
    datetime: _parse_datetime,
    date: lambda raw: date.fromisoformat(_text(raw)),
    uuid.UUID: lambda raw: uuid.UUID(_text(raw)),
    int: _integer,
    str: _text,
}


def _parser(column: Any) -> Callable[[Any], Any]:
    """How a cursor's value for `column` is read back; a column of another type cannot be a key."""
    kind = column.type
    if isinstance(kind, sa.String) or isinstance(getattr(kind, "impl", None), sa.String):
        return _text  # includes SQLModel's AutoString (a TypeDecorator whose python_type is `object`)
    python = kind.python_type
    for known, parse in _PARSERS.items():
        if issubclass(python, known):
            return parse
    raise TypeError(f"a keyset column must be a time, date, uuid, integer or text column, not {kind!r}")


@dataclass(frozen=True)
class Keyset:
    """The order of a list: `columns` (ending in a unique one), all ascending or all descending.
    `name` binds a cursor to its list."""

    name: str
    columns: Sequence[Any]
    descending: bool = False
    _parsers: tuple[Callable[[Any], Any], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parsers", tuple(_parser(c) for c in self.columns))  # fails at import, not later

    def encode(self, values: Sequence[Any]) -> str:
        raw = json.dumps({"l": self.name, "k": [_encode_value(v) for v in values]}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> tuple[Any, ...]:
        """The key values of a cursor of this list; a 422 problem for anything else."""
        try:
            raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if not isinstance(raw, dict) or raw.get("l") != self.name:
                raise ValueError("another list's cursor")
            values = raw.get("k")
            if not isinstance(values, list) or len(values) != len(self.columns):
                raise ValueError("wrong number of keys")
            return tuple(parse(v) for parse, v in zip(self._parsers, values, strict=True))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
            raise bad_cursor() from exc

    def after(self, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """Rows strictly beyond `values` in this order (a row-value comparison the index can serve)."""
        row = sa.tuple_(*self.columns)
        position = sa.tuple_(*(sa.literal(v, c.type) for c, v in zip(self.columns, values, strict=True)))
        return row < position if self.descending else row > position

    def order_by(self) -> list[Any]:
        return [c.desc() if self.descending else c.asc() for c in self.columns]


async def fetch_page(
    session: AsyncSession,
    stmt: Any,  # a sa.Select of any arity
    keyset: Keyset,
    limit: int,
    cursor: str | None,
    *,
    params: Mapping[str, Any] | None = None,
    scalars: bool = True,
) -> tuple[list[Any], str | None]:
    """One page of `stmt` in the keyset's order after `cursor`, and the cursor of the next page (or None).

    `stmt` must not be ordered or limited already. With `scalars` the first entity of each row is
    returned, else the row's own columns (the keyset's columns are read alongside and dropped)."""
    after = keyset.decode(cursor) if cursor is not None else None
    n = len(keyset.columns)
    stmt = stmt.add_columns(*(c.label(f"_page_key_{i}") for i, c in enumerate(keyset.columns)))
    if after is not None:
        stmt = stmt.where(keyset.after(after))
    stmt = stmt.order_by(*keyset.order_by()).limit(limit + 1)
    rows = list((await session.execute(stmt, dict(params or {}))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = keyset.encode(tuple(rows[-1])[-n:]) if more and rows else None
    items = [row[0] if scalars else tuple(row)[:-n] for row in rows]
    return items, next_cursor
