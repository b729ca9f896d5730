"""This project's ``service.asgi_app`` serving the peers' schema, for uvicorn.

Run: ``python -m uvicorn bench.peers.service_asgi:app ...`` (``bench peers`` does).
"""

from __future__ import annotations

from bench.peers.graphene_schema import schema
from service import asgi_app

app = asgi_app(schema)
