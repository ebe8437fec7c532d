"""the survivor index's keyed trigrams also as 32-bit codes, compared by intarray (issue #16)

The duplicate search and the case search scored each candidate row by unnesting its text keys and
counting those among the query's: a SQL subquery per row, the largest share of a report's time in
PostgreSQL once a municipality holds a few thousand similar names (measured 2.6 ms of the report's
3.7 ms in its statements, at 2 730 cases). `name_codes` holds the same keys as sorted distinct int4
(32 bits of each key's md5, `survivor_key_codes`), a stored generated column, so every writer
(reports, corrections, transfers, `mkr reindex`, COPY) keeps it in step with `name_keys` without
knowing of it; the searches compare codes with intarray's `&&` (a GIN index, gin__int_ops) and
`icount(a & b)` (C, one call per row). Two different keys of one name pair sharing a code is a 2^-32
chance per pair of keys: at worst one score slightly off. `name_keys` stays the source (the key census
counts it, `mkr reindex` rewrites it); its own GIN index is dropped, as nothing probes it any more.

Revision ID: 0012_h16codes_name_codes
Revises: 0011_h17keys_keystore
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_h16codes_name_codes"
down_revision: str | None = "0011_h17keys_keystore"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS intarray")  # a trusted extension (PostgreSQL 13+), as pg_trgm
    # A key's code: the first 32 bits of its md5 (a fixed function of the whole key, whatever its form:
    # HMAC hex today; hashtext would be cheaper but is PostgreSQL's to change). A SQL-standard body: bound
    # when created, so no search_path at run time changes what it calls.
    op.execute(
        """
        CREATE FUNCTION survivor_key_codes(keys text[]) RETURNS int4[]
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        RETURN ARRAY(SELECT DISTINCT CAST(CAST('x' || left(md5(k), 8) AS bit(32)) AS int4) FROM unnest(keys) AS k
                     ORDER BY 1)
        """
    )
    op.execute(
        "ALTER TABLE survivor_index ADD COLUMN name_codes int4[] "
        "GENERATED ALWAYS AS (survivor_key_codes(name_keys)) STORED NOT NULL"
    )
    op.execute(
        "CREATE INDEX ix_survivor_index_name_codes ON survivor_index USING gin (name_codes gin__int_ops) "
        "WITH (fastupdate = off)"
    )
    op.execute("DROP INDEX ix_survivor_index_name_keys")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_survivor_index_name_keys ON survivor_index USING gin (name_keys) WITH (fastupdate = off)"
    )
    op.execute("ALTER TABLE survivor_index DROP COLUMN name_codes")
    op.execute("DROP FUNCTION survivor_key_codes(text[])")
    # intarray stays: another database object may have come to use it since.
