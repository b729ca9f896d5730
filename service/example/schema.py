"""The example schema: notes (CRUD with an id cursor), chat messages (send, history) and their
subscriptions, built from ``query``, ``mutation`` and ``subscriptions``.

Resolvers check their arguments (``BAD_USER_INPUT`` naming the argument), call ``store``, and
after each successful change call the matching hook in ``events``, which broadcasts to the
subscriptions. The object types live in ``types``.

The GraphQL context is a dict (see ``context``): ``db``, the ``service.db.Database`` the notes
and chat fields use, and ``user`` (None, or the JWT claims with ``sub`` and optionally
``name``). A context without ``db`` is an error for exactly those fields (a ``GraphQLError``
naming the key, no fallback); ``hello``, ``me`` and the subscriptions need none. The server's
context getter (``service.server.application.make_context_getter``) provides both; to serve the
schema yourself, make one ``Database(settings)`` per worker, put it in every context, and
``await db.close()`` when the server closes.

Permissions: anyone may read. ``createNote`` needs a user (``UNAUTHENTICATED`` otherwise) and
records its ``sub`` as ``createdBy``; ``updateNote`` and ``deleteNote`` also need a user, and only
the note's author may use them on it (``FORBIDDEN`` for anyone else). ``sendChatMessage`` is open
to everyone; the sender is the user's name, else their ``sub``, else ``Anonymous``. When Postgres
cannot serve, the fields that need it answer ``SERVICE_UNAVAILABLE`` (see ``errors``).
"""

from __future__ import annotations

import graphene

from service.example.mutation import Mutation
from service.example.query import Query
from service.example.subscriptions import Subscriptions

schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscriptions)
