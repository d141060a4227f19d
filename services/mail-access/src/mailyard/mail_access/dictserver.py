"""The UNIX socket Dovecot's dict client connects to: one task per connection, requests
answered in order (Dovecot matches answers to requests by order)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailyard.core.errors import SettingsError
from mailyard.mail_access import dictproto

log = logging.getLogger(__name__)
Answer = Callable[[str], Awaitable[bytes]]


class DictServer:
    def __init__(self, path: Path, answer: Answer, owner: str = "") -> None:
        self.path = Path(path)
        self.answer = answer
        self.owner = owner
        self.server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            # a socket left by a killed bridge; anything else is someone's file (a typo)
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise SettingsError(f"auth_socket {self.path} exists and is not a socket; "
                                    "not removing it")
            self.path.unlink()
        old = os.umask(0o177)  # 0600 from the start: no window where others may connect
        try:
            self.server = await asyncio.start_unix_server(
                self._serve, self.path, limit=dictproto.MAX_LINE + 2)
        finally:
            os.umask(old)
        if self.owner and os.geteuid() == 0:
            entry = pwd.getpwnam(self.owner)
            os.chown(self.path, entry.pw_uid, entry.pw_gid)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._connection(reader, writer))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            hello = False
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # Dovecot closed the connection
                except asyncio.LimitOverrunError:
                    log.warning("dict client sent an overlong line; closing")
                    return
                request = dictproto.parse(line[:-1])
                if isinstance(request, dictproto.Hello):
                    hello = True
                    continue
                if not hello:
                    raise dictproto.ProtocolError("lookup before hello")
                writer.write(await self.answer(request.key))
                await writer.drain()
        except dictproto.ProtocolError as exc:
            log.warning("dict client refused: %s", exc)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
