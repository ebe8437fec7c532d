"""per-case data keys (crypto-shredding) and erased cases

`case_keys` holds each case's own data key, wrapped (AES-GCM) by the master key `MKR_ENCRYPTION_KEY`;
a case's personal data and free text are encrypted under it. Destroying the row makes every copy of
the case's ciphertext unreadable, backups included. Cases stored before keep their master-key
ciphertext and are read as before (lazy path: they move to a data key when next written, and erasure
destroys their ciphertext in place). `cases.erased_at` marks an erased (anonymised) case;
`erasure_reason` is sealed under the master key (the data key is gone by then).

Revision ID: 0007_h17_case_keys
Revises: 0007_h15t_transfers
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_h17_case_keys"
down_revision: str | None = "0007_h15t_transfers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_keys",
        sa.Column("case_id", sa.Uuid(), sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("wrapped", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("cases", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cases", sa.Column("erasure_reason", sa.String(), nullable=True))
    op.create_index("ix_cases_closed_unerased", "cases", ["closed_at"], postgresql_where=sa.text("erased_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_cases_closed_unerased", table_name="cases")
    op.drop_column("cases", "erasure_reason")
    op.drop_column("cases", "erased_at")
    op.drop_table("case_keys")
