"""the per-case data keys leave intake's data database for the key store (issue #17)

`case_keys` is dropped, so no data backup holds key material any more. The keys themselves are moved
before this migration runs, by intake's start (and `mkr migrate`, `mkr restore`): services/intake/
keystore.py copies every wrapped key into the key store (its own database: MKR_KEYSTORE_URL, else
`<MKR_DATABASE_PREFIX>keys`), writes a tombstone for every erased case, and deletes here each row the key
store now holds. This migration refuses to drop a table that still holds a key (nothing is lost if the
move did not happen); run again after the move, it goes through (idempotent).

Revision ID: 0011_h17keys_keystore
Revises: 0011_h17idx_index_key
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_h17keys_keystore"
down_revision: str | None = "0011_h17idx_index_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    left = op.get_bind().execute(sa.text("SELECT count(*) FROM case_keys")).scalar()
    if left:
        raise RuntimeError(
            f"case_keys still holds {left} keys not moved to the key store: start intake (or `mkr migrate`), "
            "which moves them before migrating"
        )
    op.drop_table("case_keys")


def downgrade() -> None:
    # The table comes back empty: the keys stay in the key store (copying them back would put key
    # material into the data backups again).
    op.create_table(
        "case_keys",
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("wrapped", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
