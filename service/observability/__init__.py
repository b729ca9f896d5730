"""Observability: structured logs (``logging``) and the Prometheus listener (``metrics_listener``).

The metric definitions live in ``service.metrics``. Import the submodules directly; this package
imports nothing so that the supervisor can configure logging without loading the engine.
"""
