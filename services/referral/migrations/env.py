"""Alembic environment of the referral service: its migrations, compared with its models."""

from services.referral import models
from shared.db import model_metadata, run_alembic_env
from shared.events import event_metadata

run_alembic_env(model_metadata(models, event_metadata))
