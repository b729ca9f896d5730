"""The supervisor: gunicorn's arbiter with our worker class and hooks (no home-made process
manager). gunicorn binds no listeners itself: each worker binds its own slot socket. The
arbiter serves the Prometheus endpoint for all workers (``hooks.when_ready``). Under systemd it
reports ready once every worker slot is serving (``hooks.SlotReadiness``)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from service.settings import Settings
from service.supervisor import hooks


class Supervisor(BaseApplication):
    """``Supervisor(settings).run()`` blocks running the arbiter until it stops."""

    def __init__(self, settings: Settings, options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.options = options or {}
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        config: dict[str, Any] = {
            "bind": [],
            "workers": s.workers,
            "worker_class": "service.supervisor.worker.GraphQLWorker",
            "graceful_timeout": max(1, round(s.graceful_timeout_s)),
            "timeout": max(1, round(s.worker_timeout_s)),
            "preload_app": False,
            "proc_name": "graphql-service",
            "control_socket_disable": True,
            "pre_fork": hooks.pre_fork,
            "post_fork": hooks.post_fork,
            "post_worker_init": hooks.post_worker_init,
            "when_ready": hooks.when_ready,
            "on_exit": hooks.on_exit,
            "on_reload": hooks.on_reload,
            "child_exit": hooks.child_exit,
            "on_starting": hooks.on_starting,
            "logger_class": "service.supervisor.glogging.StructlogGunicornLogger",
        }
        config.update(self.options)
        for key, value in config.items():
            self.cfg.set(key, value)

    def load(self) -> None:
        return None
