"""webhook secrets sealed at rest; each alert's NOTIFY names its addressee

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

`secret_sealed` marks secrets encrypted with the service's key; rows of before stay False until the
service seals them at its next start (the key is not known to migrations). The alert trigger becomes
per row with the addressee as payload, so a new alert wakes only the streams it concerns (an addressee
too long for a NOTIFY payload sends an empty one, which wakes every stream).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("secret_sealed", sa.Boolean, nullable=False, server_default=sa.false()))
    op.execute(
        "CREATE INDEX ix_subscriptions_owner ON subscriptions (municipality, owner_member_id) "
        "WHERE deleted_at IS NULL"
    )
    op.execute("DROP TRIGGER alerts_notify ON alerts")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION alerts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE payload text;
        BEGIN
            payload := json_build_object(
                'm', NEW.municipality, 'r', NEW.role, 'mb', NEW.member_id, 's', NEW.shelter_id, 'u', NEW.sub
            )::text;
            IF octet_length(payload) > 7000 THEN payload := ''; END IF;
            PERFORM pg_notify('mkr_alerts', payload);
            RETURN NULL;
        END $$;
        """
    )
    op.execute("CREATE TRIGGER alerts_notify AFTER INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION alerts_notify()")


def downgrade() -> None:
    op.execute("DROP TRIGGER alerts_notify ON alerts")
    op.execute(
        """
        CREATE OR REPLACE FUNCTION alerts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('mkr_alerts', ''); RETURN NULL; END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER alerts_notify AFTER INSERT ON alerts FOR EACH STATEMENT EXECUTE FUNCTION alerts_notify()"
    )
    op.execute("DROP INDEX IF EXISTS ix_subscriptions_owner")
    op.drop_column("subscriptions", "secret_sealed")
