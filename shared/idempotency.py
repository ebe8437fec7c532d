"""`Idempotency-Key` on creating calls: a retry with the same key and body gets the first answer.

The key is claimed in the same transaction as the change it guards, so a racing retry waits on the
first one's row and then reads its stored answer; a failed request leaves no claim behind, so its
retry runs again. The same key with another body is 409.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import conflict

metadata = sa.MetaData()


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("caller", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", postgresql.JSONB),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


idempotency_keys = sa.Table("idempotency_keys", metadata, *_columns())

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200,
           description="Retries with the same key and body return the first answer and change nothing."),
]


def create_idempotency_table(op: Any) -> None:
    """For a service's migration."""
    op.create_table("idempotency_keys", *_columns())


def request_hash(body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class IdempotentRequest:
    """One creating call under `Idempotency-Key`: (scope, caller, key, body hash) as one object.

    The flow an idempotent POST follows, inside the transaction of its change (intake's report stores its
    answer with the statement that numbers the case instead of `remember`, `row` below):

        once = IdempotentRequest.of(scope=..., caller=principal.sub, key=idempotency_key, body=body)
        async with session.begin():
            if await once.claim(session):        # first time (or no key): do the work
                answer = ...                     # the change, its events
                await once.remember(session, 201, answer)
                return answer
        return await once.replay(session)        # a retry: the first answer, or 409

    Without a key, `claim` is always True and `remember` does nothing: the call simply runs.
    """

    scope: str
    caller: str
    key: str | None
    body_hash: str

    @classmethod
    def of(cls, *, scope: str, caller: str, key: str | None, body: BaseModel) -> IdempotentRequest:
        return cls(scope=scope, caller=caller, key=key, body_hash=request_hash(body))

    def _where(self) -> list[sa.ColumnElement[bool]]:
        return [
            idempotency_keys.c.scope == self.scope,
            idempotency_keys.c.caller == self.caller,
            idempotency_keys.c.key == self.key,
        ]

    async def claim(self, session: AsyncSession) -> bool:
        """Take the key inside the caller's transaction; False when it was taken before (replay it)."""
        if self.key is None:
            return True
        inserted = await session.execute(
            pg_insert(idempotency_keys)
            .values(scope=self.scope, caller=self.caller, key=self.key, request_hash=self.body_hash)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        )
        return inserted.first() is not None

    def row(self) -> dict[str, str | None]:
        """The claim's row, as parameters of a statement that stores the answer itself (`idem_scope`,
        `idem_caller`, `idem_key`; the key None without an Idempotency-Key): intake's report stores its answer
        in its last statement (services/intake/numbering.py) instead of a `remember` after it."""
        return {"idem_scope": self.scope, "idem_caller": self.caller, "idem_key": self.key}

    async def remember(self, session: AsyncSession, status_code: int, answer: Any) -> None:
        """Store the answer with the claim, in the same transaction as the change."""
        if self.key is None:
            return
        await session.execute(
            idempotency_keys.update()
            .where(*self._where())
            .values(status_code=status_code, response=jsonable_encoder(answer))
        )

    async def replay(self, session: AsyncSession) -> JSONResponse:
        """The first answer for this key, or 409 when the body differs or the first is still running."""
        async with session.begin():
            row = (await session.execute(sa.select(idempotency_keys).where(*self._where()))).first()
        if row is None or row.status_code is None:
            raise conflict("A request with this Idempotency-Key is still in progress; retry.")
        if row.request_hash != self.body_hash:
            raise conflict("This Idempotency-Key was used with another request body.")
        return JSONResponse(row.response, status_code=row.status_code)
