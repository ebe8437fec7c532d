"""key census in buckets: no exact count per keyed trigram at rest

Each stored count is rounded up to a power of two (services/intake/service.py CENSUS_BUCKET), which
is all the duplicate search needs to pick rare keys.

Revision ID: 0005_census
Revises: 0005access
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_census"
down_revision: str | None = "0005access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE survivor_key_counts "
        "SET survivors = CAST(power(2, ceil(log(2.0, GREATEST(survivors, 1)::numeric))) AS int)"
    )


def downgrade() -> None:
    """Buckets stay buckets (the next recount writes buckets again)."""
