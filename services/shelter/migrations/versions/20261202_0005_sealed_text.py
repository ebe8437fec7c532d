"""sealed free text: discharge reasons and rent-bonus decision reasons

Text already stored is sealed with the service's keys (CONTRACT §3); `placement.ended` keeps
carrying only the discharge code.

Revision ID: 0005_sealed
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from shared.db import migration_settings
from shared.sealed import TextSealer, seal_stored

revision: str = "0005_sealed"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    connection = op.get_bind()
    sealer = TextSealer.from_settings(migration_settings(), "shelter")
    seal_stored(connection, sealer, "placements", ("end_reason",))
    seal_stored(connection, sealer, "rent_bonus_applications", ("decision_reason",))


def downgrade() -> None:
    """Sealed text stays sealed (opening it back into plaintext would undo the protection)."""
