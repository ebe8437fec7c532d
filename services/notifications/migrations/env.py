"""Alembic environment of the notifications service: its migrations, compared with its models."""

from services.notifications import models
from shared.db import model_metadata, run_alembic_env
from shared.events import outbox_offsets_table, outbox_table, processed_events_table

run_alembic_env(model_metadata(models, outbox_table, outbox_offsets_table, processed_events_table))
