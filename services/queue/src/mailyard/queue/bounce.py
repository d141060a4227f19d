"""Bounce messages: RFC 3464 delivery status notifications, or qmail's QSBMF text.

A DSN of internationalised mail (SMTPUTF8, or a failed address that is not ASCII) is RFC
6533's: message/global-delivery-status and message/global-headers, whose fields may carry
UTF-8, and "utf-8;" as the type of an address that is not ASCII. RFC 3464's
message/delivery-status holds ASCII only; an "rfc822;" address in UTF-8 there is what a
DSN reader may refuse or garble. Other mail's DSN is RFC 3464's, as it always was.

One bounce per message lists every failed recipient with the reply that failed it. Who gets
it follows qmail-send: the envelope sender gets a bounce; a failure of a message from <>
(a bounce itself) goes to the postmaster as a double bounce; a failed double bounce is
dropped (and counted by the caller), also once forwarded: see DOUBLE_BOUNCE_FIELD. A
bounce to a sender smtp-ingress could not verify (Envelope.sender_unverified) is recorded
and not sent: UNSENT.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from mailyard.api.mail.v1.envelope_pb2 import (
    ORIGIN_BOUNCE,
    ORIGIN_DOUBLE_BOUNCE,
)
from mailyard.core.headers import date
from mailyard.queue.linefold import fit

BOUNCE, DOUBLE_BOUNCE, DROP = "bounce", "double_bounce", "dropped"
# a bounce to a sender neither SPF nor DKIM verified (Envelope.sender_unverified): not sent
UNSENT = "unverified_sender"
UNSENT_DETAIL = "not sent: neither SPF nor DKIM verified the sender"
DELAY = "delay_warning"  # RFC 3464 Action: delayed; the message stays queued
_HEADER_LIMIT = 64 * 1024  # returned headers at most (the whole body is never echoed in DSN)
_QSBMF_LIMIT = 50_000      # qmail's bouncemaxbytes default
# Octets of a reply or host name in the DSN: with its field name ("Diagnostic-Code: smtp; ")
# the line stays within RFC 5322's 998, and 1,000 failed recipients make no more than 2 MB.
_TEXT_LIMIT = 900
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 (CR, LF, NUL, ESC...), DEL, C1
# A double bounce carries this field. The postmaster's alias may forward it: the copy keeps
# the null sender but is queued as a forward, so its origin no longer says double bounce,
# and its failure made another double bounce to the postmaster, forwarded and refused again
# for ever. qmail's copy keeps the double bounce's sender #@[]; ours keeps this field.
DOUBLE_BOUNCE_FIELD = "X-Mailyard-Double-Bounce"
_DOUBLE_BOUNCE_MARK = DOUBLE_BOUNCE_FIELD.lower().encode() + b":"


@dataclass(frozen=True)
class Failure:
    recipient: str
    reply: str
    enhanced_code: str = ""
    remote_host: str = ""


def kind_of(origin: int, sender: str, original: bytes = b"") -> str:
    """Where a failure goes: bounce to the sender, double bounce, or nowhere. `original`,
    the failed message, tells a forwarded double bounce (see DOUBLE_BOUNCE_FIELD)."""
    if origin == ORIGIN_DOUBLE_BOUNCE or (not sender and _is_double_bounce(original)):
        return DROP
    if origin == ORIGIN_BOUNCE or not sender:
        return DOUBLE_BOUNCE
    return BOUNCE


def _clean(text: str) -> str:
    """One header-safe line of at most _TEXT_LIMIT octets: a remote server's reply is its
    own text, with CR/LF, other control characters and any length."""
    line = " ".join(_CONTROLS.sub(" ", text).split())
    encoded = line.encode()
    if len(encoded) > _TEXT_LIMIT:
        line = encoded[:_TEXT_LIMIT - 3].decode("utf-8", "ignore") + "..."
    return line


def _status(code: str) -> str:
    # Action: failed needs a permanent class; a deferral that ran out of time is 5.4.7.
    if code.startswith("5."):
        return code
    if code.startswith("4."):
        return "5.4.7"
    return "5.0.0"


def _headers_of(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = original.find(b"\n\n"), 2
    head = original[:end + sep // 2] if end >= 0 else original
    return head[:_HEADER_LIMIT]


def _is_double_bounce(original: bytes) -> bool:
    head = _headers_of(original).lower()
    return head.startswith(_DOUBLE_BOUNCE_MARK) or b"\n" + _DOUBLE_BOUNCE_MARK in head


def _intro(me: str, double: bool, failures: list[Failure], original_sender: str,
           delayed: bool = False) -> str:
    lines = [f"Hi. This is the qmail-send program at {me}."]
    if delayed:
        lines += ["Your message has not been delivered to the following addresses yet.",
                  "This is only a warning: I will keep trying until it is too old.",
                  "You do not need to send it again."]
    elif double:
        lines += [f"I tried to deliver a bounce message to this address, but the bounce bounced!"
                  f" (original sender: <{original_sender}>)"]
    else:
        lines += ["I'm afraid I wasn't able to deliver your message to the following addresses.",
                  "This is a permanent error; I've given up. Sorry it didn't work out."]
    lines.append("")
    for f in failures:
        lines += [f"<{f.recipient}>:", _clean(f.reply) or "delivery failed", ""]
    return "\r\n".join(lines) + "\r\n"


def _common_headers(me: str, to: str, subject: str) -> list[str]:
    return [
        f"From: MAILER-DAEMON@{me}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {date(time.time())}",
        f"Message-ID: <{time.time_ns()}.{os.urandom(4).hex()}.bounce@{me}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
    ]


def build(*, fmt: str, me: str, to: str, kind: str, queue_id: str, original_sender: str,
          arrival: float, failures: list[Failure], original: bytes,
          smtputf8: bool = False) -> bytes:
    """The bounce message bytes (CRLF line ends), DSN by default or QSBMF. `smtputf8`: the
    failed message was SMTPUTF8 (its DSN is RFC 6533's)."""
    double = kind == DOUBLE_BOUNCE
    delayed = kind == DELAY
    subject = ("warning: delayed mail" if delayed else
               "double bounce: failure notice" if double else "failure notice")
    intro = _intro(me, double, failures, original_sender, delayed)
    common = _common_headers(me, to, subject)
    if double:
        common.append(f"{DOUBLE_BOUNCE_FIELD}: {queue_id}")
    if fmt == "qsbmf":
        head = [*common, "Content-Type: text/plain; charset=utf-8"]
        body = intro + "--- Below this line is a copy of the message.\r\n\r\n"
        text = "\r\n".join(head) + "\r\n\r\n" + body
        return text.encode() + fit(original[:_QSBMF_LIMIT])
    utf8 = smtputf8 or not all(f.recipient.isascii() for f in failures)
    boundary = f"=_mailyard_{os.urandom(8).hex()}"
    head = [*common,
            f'Content-Type: multipart/report; report-type=delivery-status;'
            f' boundary="{boundary}"']
    status = [f"Reporting-MTA: dns; {me}",
              f"X-Mailyard-Queue-ID: {queue_id}",
              f"Arrival-Date: {date(arrival)}", ""]
    for f in failures:
        code = (f.enhanced_code or "4.0.0") if delayed else _status(f.enhanced_code)
        # RFC 6533 section 3: an address that is not ASCII is of type utf-8, given as it is
        # (the utf-8-address form), and only in message/global-delivery-status (see utf8)
        kind_of_address = "rfc822" if f.recipient.isascii() else "utf-8"
        status += [f"Final-Recipient: {kind_of_address}; {f.recipient}",
                   f"Action: {'delayed' if delayed else 'failed'}", f"Status: {code}"]
        if f.remote_host:
            status.append(f"Remote-MTA: dns; {_clean(f.remote_host)}")
        diag = _clean(f.reply) or "delivery failed"
        status += [f"Diagnostic-Code: {'smtp' if f.remote_host else 'x-local'}; {diag}", ""]
    # RFC 6532 section 3.7 and RFC 6533 section 6: unlike message/rfc822, the global types
    # may be labelled 8bit, so this DSN also goes to a sender's server that has 8BITMIME only
    report, returned = (("message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit",
                         "message/global-headers\r\nContent-Transfer-Encoding: 8bit")
                        if utf8 else ("message/delivery-status", "text/rfc822-headers"))
    parts = [
        "\r\n".join(head), "",
        "This is a MIME-encapsulated delivery status notification.", "",
        f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "", intro,
        f"--{boundary}", f"Content-Type: {report}", "", "\r\n".join(status),
        f"--{boundary}", f"Content-Type: {returned}", "",
    ]
    text = "\r\n".join(parts) + "\r\n"
    tail = f"\r\n--{boundary}--\r\n"
    return text.encode() + fit(_headers_of(original).rstrip(b"\r\n")) + b"\r\n" + tail.encode()
