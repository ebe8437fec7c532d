"""Alembic environment of the intake service: its migrations, compared with its models."""

from services.intake import models
from shared import idempotency
from shared.db import model_metadata, run_alembic_env
from shared.events import event_metadata

# Reached by plain SQL only (services/intake/service.py, the key census of migration 0004): no model.
UNMODELLED = ("survivor_key_census", "survivor_key_counts")
run_alembic_env(model_metadata(models, event_metadata, idempotency.metadata, unmodelled=UNMODELLED))
