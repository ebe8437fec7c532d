"""Alembic environment of the shelter service: its migrations, compared with its models."""

from services.shelter import models
from shared import idempotency
from shared.db import model_metadata, run_alembic_env
from shared.events import event_metadata

run_alembic_env(model_metadata(models, event_metadata, idempotency.metadata))
