"""h17idx: the index key id of each blind-index row; the key census per index key

`survivor_index.key_id` is the fingerprint of the MKR_INDEX_KEY a row's keyed trigrams were made with
(NULL for the rows written before: the key then in force). `mkr reindex` rewrites the rows not under
the current key; while both keys are configured searches read under both. The key census
(`survivor_key_counts`, `survivor_key_census`) is kept per (municipality, key id; '' for NULL) so the
two keys' counts are recounted apart while rows move from one to the other. Adding a nullable column
rewrites nothing: the migration is instant on a large index.

Revision ID: 0011_h17idx_index_key
Revises: 0007_h15lp_links
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_h17idx_index_key"
down_revision: str | None = "0007_h15lp_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("survivor_index", sa.Column("key_id", sa.Text, nullable=True))
    for table in ("survivor_key_counts", "survivor_key_census"):
        op.add_column(table, sa.Column("key_id", sa.Text, nullable=False, server_default=""))
    op.execute(
        "ALTER TABLE survivor_key_counts DROP CONSTRAINT survivor_key_counts_pkey, "
        "ADD PRIMARY KEY (municipality, key_id, key)"
    )
    op.execute(
        "ALTER TABLE survivor_key_census DROP CONSTRAINT survivor_key_census_pkey, "
        "ADD PRIMARY KEY (municipality, key_id)"
    )


def downgrade() -> None:
    # One census per municipality again: the next recount rebuilds it from the index.
    op.execute("DELETE FROM survivor_key_counts")
    op.execute("DELETE FROM survivor_key_census")
    op.execute(
        "ALTER TABLE survivor_key_counts DROP CONSTRAINT survivor_key_counts_pkey, ADD PRIMARY KEY (municipality, key)"
    )
    op.execute(
        "ALTER TABLE survivor_key_census DROP CONSTRAINT survivor_key_census_pkey, ADD PRIMARY KEY (municipality)"
    )
    for table in ("survivor_key_counts", "survivor_key_census"):
        op.drop_column(table, "key_id")
    op.drop_column("survivor_index", "key_id")
