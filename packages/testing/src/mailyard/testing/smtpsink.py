"""An SMTP sink for tests: aiosmtpd on 127.0.0.1 storing every message it receives, the
remote host (or smarthost) a delivery ends at."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from mailyard.core.natsserver import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str = ""


@dataclass
class SmtpSink:
    """aiosmtpd on 127.0.0.1 storing every message. `refuse` maps a recipient to a reply
    ("550 5.1.1 no such user"); `delay` sleeps before answering the final dot."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    _controller: Any = None

    def start(self) -> SmtpSink:
        sink = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: list[str]) -> str:
                if address in sink.refuse:
                    return sink.refuse[address]
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 ok"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if sink.delay:
                    await asyncio.sleep(sink.delay)
                sink.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                              envelope.original_content or b"",
                                              str(session.peer[0])))
                return "250 2.0.0 ok sink"

        self.port = self.port or free_port(self.host)
        self._controller = Controller(Handler(), hostname=self.host, port=self.port,
                                      enable_SMTPUTF8=True, decode_data=False)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages
