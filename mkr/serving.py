"""What uvicorn imports in each worker when `mkr serve` runs several (`MKR_WORKERS` > 1).

uvicorn's supervisor spawns fresh interpreters, so it needs the app as an import string rather than an
object: `mkr.serving:app` with `factory=True`. `mkr serve` names the service in `MKR_SERVE_SERVICE` and
the worker count in `MKR_WORKERS` before it starts them; each worker reads its settings from that
environment, as the supervisor does.
"""

from __future__ import annotations

import os
from typing import Any

from mkr.registry import app_factory
from shared.observability import configure_logging
from shared.settings import Settings

SERVICE_VARIABLE = "MKR_SERVE_SERVICE"
IMPORT_STRING = "mkr.serving:app"


def app() -> Any:
    """The app factory of one worker: the service `mkr serve` was asked for, built from the environment."""
    settings = Settings()
    configure_logging(settings.log_level)
    return app_factory(os.environ[SERVICE_VARIABLE], settings)()
