"""A redis-server of a test's own: to stop, restart, freeze (SIGSTOP) and thaw it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

from support.polling import apoll_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class OwnRedis:
    """A redis-server of this test's own, on a free port, that can be stopped and restarted."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        await apoll_until(self._pong, timeout_s=10, what=f"redis-server on port {self.port}")

    async def _pong(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await asyncio.wait_for(reader.readline(), 2) == b"+PONG\r\n"
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung server or a partition)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
