"""key census for the duplicate search: how many survivors hold each keyed trigram; birth-year index

The duplicate search probes the GIN index with only the rarest keys of a name (enough of them that
no match above the threshold can be missed), so it needs to know which keys are rare. The census is
a hint, recounted in the background; a key it does not know counts as rare. The name-key index stops
using GIN's pending list (fastupdate), which every search would read through.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "survivor_key_counts",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("survivors", sa.Integer, nullable=False),
    )
    op.create_table(
        "survivor_key_census",
        sa.Column("municipality", sa.Text, primary_key=True),
        sa.Column("survivors", sa.Integer, nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_survivor_index_birth_year", "survivor_index", ["municipality", "birth_year"])
    # Every report searches this index, so new entries go straight into it rather than into GIN's pending
    # list, which each search would otherwise read through in full until a vacuum merged it.
    op.execute("ALTER INDEX ix_survivor_index_name_keys SET (fastupdate = off)")
    op.execute("SELECT gin_clean_pending_list('ix_survivor_index_name_keys')")
    op.execute(
        "INSERT INTO survivor_key_counts (municipality, key, survivors) "
        "SELECT s.municipality, k, count(*) FROM survivor_index s, unnest(s.name_keys) AS k GROUP BY 1, 2"
    )
    op.execute(
        "INSERT INTO survivor_key_census (municipality, survivors, counted_at) "
        "SELECT municipality, count(*), now() FROM survivor_index GROUP BY municipality"
    )


def downgrade() -> None:
    op.execute("ALTER INDEX ix_survivor_index_name_keys RESET (fastupdate)")
    op.drop_index("ix_survivor_index_birth_year", table_name="survivor_index")
    op.drop_table("survivor_key_census")
    op.drop_table("survivor_key_counts")
