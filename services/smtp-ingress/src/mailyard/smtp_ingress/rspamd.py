"""rspamd over its HTTP protocol (POST /checkv2, https://rspamd.com/doc/developers/protocol.html)
at the end of DATA, opt-in: control/rspamd holds the normal worker's URL
(e.g. http://127.0.0.1:11333); no file, no scanning.

The envelope goes in request headers (IP, Helo, From, Rcpt, User, Queue-Id), the message
as the body. rspamd down, slow (RSPAMD_TIMEOUT) or answering nonsense: the message is
accepted unscanned and counted (fail open for content only: every other check has already
run, and a scanner outage must not stop the mail).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx

from mailyard.core import headers

log = logging.getLogger(__name__)
ACTIONS = {"no action": "no_action", "add header": "add_header",
           "rewrite subject": "rewrite_subject", "soft reject": "soft_reject",
           "reject": "reject", "greylist": "greylist"}


@dataclass(frozen=True)
class Scan:
    action: str           # a value of ACTIONS, or "error" / "timeout" (not scanned)
    score: float = 0.0
    required: float = 0.0
    subject: str = ""     # the new Subject: for rewrite_subject

    @property
    def scanned(self) -> bool:
        return self.action in ACTIONS.values()

    def header(self) -> bytes:
        """X-Spamd-Result as rspamd's own milter writes it (score / required), plus
        X-Spam: Yes for add_header and rewrite_subject."""
        spam = self.action in ("add_header", "rewrite_subject")
        out = (f"X-Spamd-Result: default: {spam} [{self.score:.2f} / "
               f"{self.required:.2f}]\r\n").encode()
        return out + (b"X-Spam: Yes\r\n" if spam else b"")


class RspamdClient:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.http = httpx.AsyncClient(timeout=timeout)

    async def check(self, url: str, message: bytes, *, ip: str, helo: str, sender: str,
                    recipients: list[str], user: str, queue_id: str = "") -> Scan:
        headers = [("IP", ip), ("Helo", helo), ("From", sender or "<>")]
        headers += [("Rcpt", r) for r in recipients]
        if user:
            headers.append(("User", user))
        if queue_id:
            headers.append(("Queue-Id", queue_id))
        try:
            response = await self.http.post(url.rstrip("/") + "/checkv2", content=message,
                                             headers=headers)
            response.raise_for_status()
            answer = json.loads(response.content)
            action = ACTIONS.get(str(answer.get("action", "")).lower())
            if action is None:
                raise ValueError(f"unknown action {answer.get('action')!r}")
            subject = str(answer.get("subject", ""))
            return Scan(action, float(answer.get("score", 0.0)),
                        float(answer.get("required_score", 0.0)),
                        "".join(c for c in subject if c.isprintable())[:300])
        except httpx.TimeoutException:
            log.warning("rspamd did not answer within %ss: accepted unscanned", self.timeout)
            return Scan("timeout")
        except Exception as exc:
            log.warning("rspamd check failed (%s): accepted unscanned", type(exc).__name__)
            return Scan("error")

    async def close(self) -> None:
        await self.http.aclose()


def rewrite_subject(message: bytes, subject: str) -> bytes:
    """The message with its Subject: field(s) replaced by one new one (or one added)."""
    head, rest = headers.split(message)
    out = [b"\r\n".join(field) + b"\r\n" for field in headers.fields(head)
           if not field[0].lower().startswith(b"subject:")]
    new = b"Subject: " + subject.encode("utf-8", "replace") + b"\r\n"
    return new + b"".join(out) + rest
