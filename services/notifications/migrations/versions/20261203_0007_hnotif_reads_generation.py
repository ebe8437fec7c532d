"""the consumer's reads generation: bumped by every change of alert rules or webhook subscriptions

The consumer keeps the enabled rules and the live subscriptions between its transactions and reads them
again only when this number moved (services/notifications/batch.py): one row, incremented by a statement
trigger on each table, so a change becomes visible with the commit that makes it.

Revision ID: 0007_hnotif_generation
Revises: 0006_h17_prune
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_hnotif_generation"
down_revision: str | None = "0006_h17_prune"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WATCHED = ("alert_rules", "subscriptions")


def upgrade() -> None:
    op.create_table(
        "consumer_reads_generation",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="one_row"),
    )
    op.execute("INSERT INTO consumer_reads_generation (id, generation) VALUES (1, 0)")
    op.execute(
        """
        CREATE FUNCTION consumer_reads_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE consumer_reads_generation SET generation = generation + 1 WHERE id = 1; RETURN NULL; END $$
        """
    )
    for table in WATCHED:
        op.execute(
            f"CREATE TRIGGER {table}_reads_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION consumer_reads_changed()"
        )


def downgrade() -> None:
    for table in WATCHED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_reads_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS consumer_reads_changed()")
    op.drop_table("consumer_reads_generation")
