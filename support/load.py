"""Steady ``{ hello }`` traffic from threads on keep-alive connections, counting outcomes: the
load that reload, failover and rejoin tests run under (they then assert that nothing failed)."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable
from urllib.parse import quote

from support.polling import poll_until

HELLO = {"data": {"hello": "Hello, world!"}}


class HelloLoad:
    """``clients`` threads, each on its own connection from ``connect()``, sending ``{ hello }``
    over GET (``method="GET"``, to ``path`` with the query in the URL) or POST until the ``with``
    block ends. An answer other than 200 with the greeting, or a connection error, is counted
    under its description in ``outcomes`` (the connection is then replaced)."""

    def __init__(
        self,
        connect: Callable[[], http.client.HTTPConnection],
        *,
        method: str = "POST",
        path: str = "/graphql",
        clients: int = 4,
    ) -> None:
        self.connect = connect
        if method == "GET":
            self.request: tuple[str, str, bytes | None, dict[str, str]] = (
                "GET",
                f"{path}?query={quote('{ hello }')}",
                None,
                {},
            )
        else:
            body = json.dumps({"query": "{ hello }"}).encode()
            self.request = ("POST", path, body, {"Content-Type": "application/json"})
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        method, path, body, headers = self.request
        conn = self.connect()
        while not self.stopping.is_set():
            try:
                conn.request(method, path, body, headers)
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and json.loads(data) == HELLO
                outcome = "ok" if ok else f"HTTP {response.status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = self.connect()
            with self.lock:
                self.outcomes[outcome] += 1
        conn.close()

    def ok(self) -> int:
        with self.lock:
            return self.outcomes["ok"]

    def more(self, n: int, what: str) -> None:
        """Wait until ``n`` more requests have succeeded."""
        target = self.ok() + n
        poll_until(lambda: self.ok() >= target, timeout_s=30, what=f"{n} requests {what}")

    def __enter__(self) -> HelloLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(20)
