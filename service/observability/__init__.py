"""Observability: structured logs (``logging``), metrics (``metrics``) and their exposition.

Import the submodules directly: this package imports nothing, so the supervisor can configure
logging and serve the exposition without defining metrics of its own (``exposition``).
"""
