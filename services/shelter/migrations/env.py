"""Alembic environment of the shelter service: its migrations, compared with its models."""

from services.shelter import models
from shared.db import model_metadata, run_alembic_env
from shared.events import outbox_offsets_table, outbox_table, processed_events_table
from shared.idempotency import idempotency_keys

run_alembic_env(model_metadata(models, outbox_table, outbox_offsets_table, processed_events_table, idempotency_keys))
