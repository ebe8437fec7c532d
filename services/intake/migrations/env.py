"""Alembic environment of the intake service: its migrations, compared with its models."""

from services.intake import models
from shared.db import model_metadata, run_alembic_env
from shared.events import outbox_offsets_table, outbox_table, processed_events_table
from shared.idempotency import idempotency_keys

# Reached by plain SQL only (services/intake/service.py, the key census of migration 0004): no model.
UNMODELLED = ("survivor_key_census", "survivor_key_counts")

run_alembic_env(
    model_metadata(
        models, outbox_table, outbox_offsets_table, processed_events_table, idempotency_keys, unmodelled=UNMODELLED
    )
)
