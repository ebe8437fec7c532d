"""The notifications service: inbox, live stream, webhooks and e-mail."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from services.notifications import case_alerts
from services.notifications.api import router
from services.notifications.config import NotificationsConfig
from services.notifications.delivery import Broadcaster, DeliveryWorker, Notifier, secret_cipher
from services.notifications.events import CONSUMED_TOPICS, EventHandler
from services.notifications.scheduler import protection_order_scheduler
from services.notifications.transfers import transfer_scheduler
from shared.app import ConsumerSpec, create_service_app
from shared.pruning import PruneTarget, pruning_job, shared_targets
from shared.settings import Settings, get_settings


def prune_targets(settings: Settings, config: NotificationsConfig) -> list[PruneTarget]:
    """The shared tables, and the webhook and e-mail deliveries once delivered or dead-lettered."""
    finished = PruneTarget(
        "deliveries",
        "state IN ('succeeded', 'dead', 'cancelled') AND coalesce(delivered_at, last_attempt_at, created_at) < :cutoff",
        lambda: timedelta(days=config.delivery_keep_days),
    )
    return [*shared_targets(settings, idempotency=False), finished]


def create_app(settings: Settings | None = None, config: NotificationsConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    config = config or NotificationsConfig()
    secret_cipher(settings)  # webhook secrets are sealed at rest: production refuses to start without the key
    broadcaster = Broadcaster()
    notifier = Notifier(broadcaster)
    worker = DeliveryWorker(config, notifier)
    app = create_service_app(
        name="notifications",
        settings=settings,
        routers=[router, case_alerts.router],
        migrations=Path(__file__).parent / "migrations",
        # A partition's records in batches (the consumer's default size), each one transaction: a batch takes
        # the alert lock before anything else it locks, so two batches never deadlock (batch.py).
        consumers=[ConsumerSpec("alerts", CONSUMED_TOPICS, EventHandler(settings, config))],
        background=[worker.run, protection_order_scheduler(config), transfer_scheduler(config),
                    pruning_job(settings, prune_targets(settings, config))],
        per_worker=[notifier.run],  # each worker LISTENs for its own SSE streams (and wakes its delivery worker)
        title="MKR notifications",
    )
    app.state.notifications_config = config
    app.state.broadcaster = broadcaster
    return app
