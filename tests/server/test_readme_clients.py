"""The README's gql example ("Clients") against a real server: HTTP, then both WebSocket
subprotocols, signed in with a token from the environment as the README says."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import service.example.schema
from service.auth import issue_token
from service.server.application import make_context_getter, make_ws_authenticator
from service.server.serve import Server, serve
from service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "readme-clients-secret-0123456789abcdef"


def readme_python(section: str) -> str:
    """The first ```python block of the README section titled ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.S)
    assert blocks, f"no python block in README section {section!r}"
    return str(blocks[0])


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, Settings]]:
    settings = Settings(jwt_secret=SECRET, redis_url="")
    srv = await serve(
        service.example.schema.schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=settings,
        get_context=make_context_getter(settings),
        authenticate=make_ws_authenticator(settings),
    )
    try:
        yield srv, settings
    finally:
        await srv.close(2.0)


@pytest.mark.parametrize("signed_in", [True, False])
async def test_the_gql_example(
    server: tuple[Server, Settings],
    signed_in: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv, settings = server
    code = readme_python("Clients")
    assert "asyncio.run(main())" in code and "127.0.0.1:8080" in code
    code = code.replace("127.0.0.1:8080", f"127.0.0.1:{srv.tcp_port()}")
    code = code.replace("asyncio.run(main())", "")  # the test's loop runs it
    if signed_in:
        monkeypatch.setenv("TOKEN", issue_token(settings, sub="alice"))
    else:
        monkeypatch.delenv("TOKEN", raising=False)
    namespace: dict[str, Any] = {"__name__": "readme_gql_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    await namespace["main"]()
    lines = capsys.readouterr().out.splitlines()
    me = {"id": "alice"} if signed_in else None
    assert lines[0] == "http " + repr({"hello": "Hello, world!", "me": me})
    for subprotocol in ("graphql-transport-ws", "graphql-ws"):
        values = [
            ast.literal_eval(line.split(" ", 1)[1])["countdown"]
            for line in lines
            if line.startswith(subprotocol + " ")
        ]
        assert values == [3, 2, 1, 0], (subprotocol, lines)
