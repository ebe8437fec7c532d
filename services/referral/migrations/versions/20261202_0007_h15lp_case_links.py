"""case facts carry the coordinator's duplicate decisions; report rollups kept by triggers

`repeat` and `pending_duplicates` come from intake's `case.linked` / `case.unlinked`.

Cases count where they were reported (`reported_municipality`, 0005_h15t), with `transferred_out` when
they have moved since. The national summary scanned every case and referral of the period (500 000 of
each: 1.2-3.6 s). Monthly rollups (`case_counts`, `referral_counts`, `referral_ack_buckets`) are now
kept by statement-level triggers on `case_facts` and `referrals` (transition tables: one aggregate per
statement, so a COPY or a multi-row INSERT costs one upsert per touched cell, and an UPDATE subtracts the
old row and adds the new), back-filled here. `case_count_cells` defines a case's cells for the trigger
(the report counts the days outside whole months from the rows, independently; tests compare the two).
The acknowledgement times are counted per bucket (8 per doubling of the seconds); the expression index
finds one bucket's referrals, from which the exact median is read.

Revision ID: 0005_h15lp_links
Revises: 0006_h14_pending
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_h15lp_links"
down_revision: str | None = "0006_h14_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CELLS_FUNCTION = """
CREATE FUNCTION case_count_cells(
    p_sex text, p_age_group text, p_ethnicity text, p_risk_level text, p_source text, p_violence_types jsonb,
    p_children_count integer, p_status text, p_repeat boolean, p_transferred_out boolean
) RETURNS TABLE (dimension text, value text) LANGUAGE sql IMMUTABLE AS $$
    SELECT t.d, t.v FROM (VALUES
        ('total', 'all'),
        ('with_children', CASE WHEN p_children_count > 0 THEN 'yes' END),
        ('closed', CASE WHEN p_status = 'closed' THEN 'yes' END),
        ('repeat', CASE WHEN p_repeat THEN 'yes' END),
        ('transferred_out', CASE WHEN p_transferred_out THEN 'yes' END),
        ('sex', coalesce(p_sex, 'unknown')),
        ('age_group', coalesce(p_age_group, 'unknown')),
        ('ethnicity', coalesce(p_ethnicity, 'undisclosed')),
        ('risk_level', p_risk_level),
        ('source', coalesce(p_source, 'unknown'))
    ) AS t(d, v) WHERE t.v IS NOT NULL
    UNION ALL
    SELECT DISTINCT 'violence_type', vt FROM jsonb_array_elements_text(coalesce(p_violence_types, '[]')) AS vt
    UNION ALL
    SELECT 'violence_type', 'unknown' WHERE jsonb_array_length(coalesce(p_violence_types, '[]')) = 0
$$
"""

CASE_ROWS = """
    SELECT c.reported_municipality AS municipality,
           date_trunc('month', c.reported_at AT TIME ZONE 'UTC')::date AS month, cell.dimension, cell.value,
           {sign} AS n
    FROM {rows} c CROSS JOIN LATERAL case_count_cells(
        c.sex, c.age_group, c.ethnicity, c.risk_level, c.source, c.violence_types, c.children_count, c.status,
        c.repeat, c.municipality <> c.reported_municipality) AS cell
"""
CASE_UPSERT = """
    INSERT INTO case_counts AS t (municipality, month, dimension, value, n)
    SELECT municipality, month, dimension, value, sum(n) FROM ({rows}) x
    GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (municipality, month, dimension, value) DO UPDATE SET n = t.n + EXCLUDED.n
"""
# The bucket of a referral's time to acknowledge: 8 per doubling of the seconds (each about 9 % wide), so a
# month of a municipality has a few dozen; the exact median is read from the rows of the middle bucket.
ACK_BUCKET = "floor(8 * ln(greatest(date_part('epoch', {r}acknowledged_at - {r}created_at), 1)) / ln(2.0))::integer"
REFERRAL_ROWS = """
    SELECT r.municipality, date_trunc('month', r.created_at AT TIME ZONE 'UTC')::date AS month,
           r.to_member_kind, r.status, {sign} AS n,
           CASE WHEN r.sla_breached_at IS NOT NULL THEN {sign} ELSE 0 END AS breaches,
           CASE WHEN r.acknowledged_at IS NOT NULL THEN {bucket} END AS bucket
    FROM {rows} r
"""
REFERRAL_ROWS = REFERRAL_ROWS.replace("{bucket}", ACK_BUCKET.format(r="r."))
REFERRAL_UPSERTS = """
    INSERT INTO referral_counts AS t (municipality, month, to_member_kind, status, n, breaches)
    SELECT municipality, month, to_member_kind, status, sum(n), sum(breaches) FROM ({rows}) x
    GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 OR sum(breaches) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (municipality, month, to_member_kind, status)
    DO UPDATE SET n = t.n + EXCLUDED.n, breaches = t.breaches + EXCLUDED.breaches;
    INSERT INTO referral_ack_buckets AS t (municipality, month, bucket, n)
    SELECT municipality, month, bucket, sum(n) FROM ({rows}) x WHERE bucket IS NOT NULL
    GROUP BY 1, 2, 3 HAVING sum(n) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT (municipality, month, bucket) DO UPDATE SET n = t.n + EXCLUDED.n
"""


def _trigger_function(name: str, upsert: str, rows: str) -> str:
    """A plpgsql trigger function applying `upsert` to the statement's transition tables (+1 new, -1 old)."""
    added = rows.format(sign=1, rows="new_rows")
    removed = rows.format(sign=-1, rows="old_rows")
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {upsert.format(rows=added)};
    ELSIF TG_OP = 'DELETE' THEN
        {upsert.format(rows=removed)};
    ELSE
        {upsert.format(rows=added + " UNION ALL " + removed)};
    END IF;
    RETURN NULL;
END
$$
"""


def _triggers(table: str, function: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_rollup_insert AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_rollup_update AFTER UPDATE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_rollup_delete AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def upgrade() -> None:
    op.add_column("case_facts", sa.Column("repeat", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column(
        "case_facts", sa.Column("pending_duplicates", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "case_counts",
        sa.Column("municipality", sa.Text(), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("dimension", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "referral_counts",
        sa.Column("municipality", sa.Text(), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("to_member_kind", sa.Text(), primary_key=True),
        sa.Column("status", sa.Text(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("breaches", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "referral_ack_buckets",
        sa.Column("municipality", sa.Text(), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.execute(
        f"CREATE INDEX ix_referrals_ack_bucket ON referrals (({ACK_BUCKET.format(r='')})) "
        "WHERE acknowledged_at IS NOT NULL"
    )
    op.execute(CELLS_FUNCTION)
    op.execute(_trigger_function("case_counts_apply", CASE_UPSERT, CASE_ROWS))
    op.execute(_trigger_function("referral_counts_apply", REFERRAL_UPSERTS, REFERRAL_ROWS))
    for statement in _triggers("case_facts", "case_counts_apply") + _triggers("referrals", "referral_counts_apply"):
        op.execute(statement)
    # Back-fill from the rows already there.
    op.execute(CASE_UPSERT.format(rows=CASE_ROWS.format(sign=1, rows="case_facts")))
    for upsert in REFERRAL_UPSERTS.split(";"):
        op.execute(upsert.format(rows=REFERRAL_ROWS.format(sign=1, rows="referrals")))


def downgrade() -> None:
    for table in ("case_facts", "referrals"):
        for op_name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_rollup_{op_name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS referral_counts_apply()")
    op.execute("DROP FUNCTION IF EXISTS case_counts_apply()")
    op.execute(
        "DROP FUNCTION IF EXISTS case_count_cells(text, text, text, text, text, jsonb, integer, text, boolean, boolean)"
    )
    op.execute("DROP INDEX IF EXISTS ix_referrals_ack_bucket")
    op.drop_table("referral_ack_buckets")
    op.drop_table("referral_counts")
    op.drop_table("case_counts")
    op.drop_column("case_facts", "pending_duplicates")
    op.drop_column("case_facts", "repeat")
