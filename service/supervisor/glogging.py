"""gunicorn's logger class, rendering through the service's structlog setup.

gunicorn builds its logger in the arbiter (``logger_class``) and the forked workers inherit it.
``setup`` configures logging from the environment (``LOG_FORMAT``, ``LOG_LEVEL``) and lets the
``gunicorn.error`` and ``gunicorn.access`` loggers propagate to the root handler that
``configure_logging`` installed, so arbiter and worker lines are the same JSON (or console) lines
as the application's, with no gunicorn-format text. A worker that later calls
``configure_logging(settings, slot=k)`` adds its slot to gunicorn's lines too; until then a
worker's lines ("Booting worker ...") go through the arbiter's setup, with the worker's pid.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from service.observability.logging import configure_logging
from service.settings import Settings


class StructlogGunicornLogger(Logger):
    """``logger_class = "service.supervisor.glogging.StructlogGunicornLogger"``."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self._access_log_enabled = self._compute_access_log_enabled()
        settings = Settings.from_env()
        # gunicorn's loggers reach the root handler installed here; the returned ``Logs``
        # (the server's request and WebSocket loggers) is for workers, which make their own.
        configure_logging(settings)
        root_level = logging.getLogger().level
        self.loglevel = root_level
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.setLevel(root_level)
            log.propagate = True
