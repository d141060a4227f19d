"""Subscribing to and leaving a list by mail (ezmlm-manage, double opt-in), for lists whose
subscription policy is CONFIRM; a closed list's command addresses stay refused (resolve.py).

- LIST+subscribe@ / LIST+unsubscribe@ (any recipient delimiter; ezmlm's
  LIST-subscribe-user=host@ for another address) get a confirmation request sent to the
  address asked for, Reply-To LIST+sc.COOKIE-user=host@ (+uc. to leave): the cookie
  (mailyard.core.listcookie) is good for ten days. Nothing changes yet.
- Those requests are bounded (subscribe_limit.py): one per list, action and address an
  hour, a few per address a day; over that the request is dropped without an answer.
- Mail to that address hands the cookie to the directory's ConfirmListMember, which checks
  it and makes the change; the member then gets a welcome or goodbye note. A cookie that is
  forged or expired changes nothing; as ezmlm-manage does (its sub-bad), the address the
  cookie names gets a new request, bounded like any, and the sender no bounce (the sender
  may be forged: a bounce per forged cookie would be backscatter).

No answer ever goes to the null sender, an automatic sender (MAILER-DAEMON, owner-*,
*-request, also behind SRS or BATV) or mail that says it is automatic, bulk or list mail
(the vacation rules, autoreply.py), so two robots cannot talk to each other. Answers go
from LIST+return@ (ezmlm's LIST-return-) with Auto-Submitted: auto-replied (RFC 3834),
through the queue like every reply; mail to that address is dropped (returned()), never
answered, bounced or posted.

The directory is called with local-delivery's own token (role listmail): it may confirm and
do nothing else. Read at the first confirmation, so a host without one still delivers mail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import grpc
from nats.js import JetStreamContext

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.api.mail.v1.delivery_pb2 import DeliveryJob, Outcome
from mailyard.core import auth, headers, listaddresses, listcookie
from mailyard.core.errors import SettingsError
from mailyard.core.sender_author import author
from mailyard.core.spool import Spool
from mailyard.core.srs_keys import SrsSecrets
from mailyard.local_delivery import autoheaders, autoreply, metrics, reinject
from mailyard.local_delivery.resolve import ListCommand
from mailyard.local_delivery.settings import Settings
from mailyard.local_delivery.subscribe_limit import RequestLimit

log = logging.getLogger(__name__)

# delivery replies (the bounce text a sender reads)
NOT_ANSWERED = "list command not answered: {why}"
RETURNED = "dropped: mail to the return address of {list}"
REQUESTED = "confirmation request sent"
LIMITED = "confirmation request not sent: over the bound on requests to {address}"
RENEWED = "confirmation invalid or expired: a new request sent to {address}"
CLOSED = "Sorry, {list} no longer takes subscriptions by mail; write to {owner}. (#5.7.1)"
BAD_ADDRESS = "Sorry, {address} cannot be subscribed to {list}. (#5.1.3)"
UNAVAILABLE = "Unable to answer the list command now; will try again. (#4.3.0)"

# the messages the subscriber reads
REQUEST_SUBJECT = {listcookie.SUBSCRIBE: "confirm subscribe to {list}",
                   listcookie.UNSUBSCRIBE: "confirm unsubscribe from {list}"}
STALE = """\
The confirmation that came in for this address was invalid or has expired (they last {days}
days), so nothing changed. Here is a new one.

"""
REQUEST_BODY = """\
Someone, probably you, asked to {verb} the address

    {address}

{prep} the mailing list {list}.

To confirm, reply to this message (its Reply-To is the confirmation address), or send
an empty message to

    {confirm}

This confirmation works for {days} days. If you did not ask for this, ignore this
message: nothing changes without your reply.

The list's owner can be reached at {owner}.
"""
DONE_SUBJECT = {listcookie.SUBSCRIBE: "welcome to {list}",
                listcookie.UNSUBSCRIBE: "goodbye from {list}"}
DONE_BODY = {listcookie.SUBSCRIBE: """\
The address {address} is now subscribed to the mailing list {list}.

To post, write to {list}. To leave, send an empty message to {other}.
The list's owner can be reached at {owner}.
""", listcookie.UNSUBSCRIBE: """\
The address {address} has been removed from the mailing list {list}; it gets no more
of its mail. To join again, send an empty message to {other}.
"""}


class Subscriptions:
    def __init__(self, settings: Settings, spool: Spool, js: JetStreamContext,
                 secrets: SrsSecrets) -> None:
        self.settings = settings
        self.spool = spool
        self.js = js
        self.secrets = secrets
        self._stub: Any = None  # DirectoryStub on an aio channel
        self._channel: grpc.aio.Channel | None = None
        self.limit = RequestLimit(js, settings.list_requests_per_day)

    def _directory(self) -> Any:
        if self._stub is None:
            token = auth.client_token(self.settings.token_file, "listmail")
            channel = auth.aio_channel(self.settings.directory_addr, token)
            self._channel, self._stub = channel, pb_grpc.DirectoryStub(channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def handle(self, job: DeliveryJob, data: bytes, cmd: ListCommand
                     ) -> tuple[int, str, str]:
        """(outcome, reply, enhanced code) of one recipient that is a list command."""
        why = autoreply.sender_excluded(job.sender, cmd.list_address)
        if why is None:
            orig = autoheaders.parse(data)
            why = autoreply.header_excluded(replace(orig, recipients={""}), {""})
        if why:
            # accepted and dropped: a bounce of a robot's mail would reach another robot
            metrics.LIST_COMMANDS.labels("excluded").inc()
            log.info("list command not answered: %s", why, extra={"queue_id": job.queue_id})
            return Outcome.OUTCOME_DELIVERED, NOT_ANSWERED.format(why=why), "2.0.0"
        if cmd.command.cookie:
            return await self._confirm(job, cmd)
        return await self._request(job, cmd)

    async def _request(self, job: DeliveryJob, cmd: ListCommand, stale: bool = False
                       ) -> tuple[int, str, str]:
        """A confirmation request to the address asked for (`stale`: in place of a
        confirmation that was invalid or expired, ezmlm-manage's sub-bad)."""
        # the author behind an SRS or BATV envelope sender: the address that reads mail
        address = (cmd.command.address or author(job.sender)).lower()
        action = cmd.command.action
        if listcookie.parse(f"{action}-{address.replace('@', '=')}") is None:
            # a quoted or odd local part a confirmation address cannot carry back
            metrics.LIST_COMMANDS.labels("excluded").inc()
            return (Outcome.OUTCOME_FAILED,
                    BAD_ADDRESS.format(address=address, list=cmd.list_address), "5.1.3")
        now = time.time()
        try:
            [secret, *_] = await self.secrets.get()
        except Exception as exc:  # the bucket away: the queue tries again
            metrics.LIST_COMMANDS.labels("failed").inc()
            log.warning("list confirmation request deferred: %s", exc or type(exc).__name__,
                        extra={"queue_id": job.queue_id})
            return Outcome.OUTCOME_DEFERRED, UNAVAILABLE, "4.3.0"
        cookie = listcookie.make(secret, cmd.list_address, action, address, now)
        confirm = listcookie.confirm_address(cmd.list_address, cmd.delimiter, action,
                                             address, cookie)
        verb = action
        body = (STALE.format(days=listcookie.COOKIE_DAYS) if stale else "") + REQUEST_BODY.format(
            verb=verb, address=address,
            prep="to" if action == listcookie.SUBSCRIBE else "from",
            list=cmd.list_address, confirm=confirm, days=listcookie.COOKIE_DAYS,
            owner=self._owner(cmd))
        subject = REQUEST_SUBJECT[action].format(list=cmd.list_address)
        claim = await self.limit.claim(cmd.list_address, action, address, now)
        if claim is None:
            # over a bound (subscribe_limit.py): accepted and dropped, no bounce, since
            # whoever asked may be using us against the address; the reply is the
            # postmaster's alone (mailyard log: no DSN reports a delivery), so it says why
            metrics.LIST_COMMANDS.labels("limited").inc()
            log.info("list confirmation request not sent: over the bound", extra={
                "queue_id": job.queue_id, "list": cmd.list_address, "action": action})
            return Outcome.OUTCOME_DELIVERED, LIMITED.format(address=address), "2.0.0"
        try:
            qid = await self._send(cmd, address, subject, body, reply_to=confirm)
        except BaseException:
            await claim.undo()  # deferred: its retry is no repeat
            raise
        metrics.LIST_COMMANDS.labels("requested").inc()
        log.info("list confirmation request sent", extra={
            "queue_id": job.queue_id, "new_queue_id": qid, "list": cmd.list_address,
            "action": action})
        return (Outcome.OUTCOME_DELIVERED,
                RENEWED.format(address=address) if stale else REQUESTED, "2.0.0")

    async def _confirm(self, job: DeliveryJob, cmd: ListCommand) -> tuple[int, str, str]:
        command = cmd.command
        subscribe = command.action == listcookie.SUBSCRIBE
        try:
            await self._directory().ConfirmListMember(pb.ConfirmListMemberRequest(
                list=cmd.list_address, member=command.address, subscribe=subscribe,
                cookie=command.cookie), timeout=self.settings.directory_timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            metrics.LIST_COMMANDS.labels("refused" if code in _REFUSALS else "failed").inc()
            if code == grpc.StatusCode.PERMISSION_DENIED:
                # ezmlm-manage's sub-bad: a new confirmation request to the address the
                # cookie names (bounded as every request is), never a bounce to the sender,
                # which anyone may forge: a bounce per forged cookie is backscatter
                return await self._request(job, cmd, stale=True)
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                return (Outcome.OUTCOME_FAILED,
                        CLOSED.format(list=cmd.list_address, owner=self._owner(cmd)), "5.7.1")
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                return (Outcome.OUTCOME_FAILED,
                        BAD_ADDRESS.format(address=command.address, list=cmd.list_address),
                        "5.1.3")
            log.warning("list confirmation deferred: %s", code.name,
                        extra={"queue_id": job.queue_id})
            return Outcome.OUTCOME_DEFERRED, UNAVAILABLE, "4.3.0"
        except SettingsError as exc:  # no listmail token: the postmaster's to fix
            metrics.LIST_COMMANDS.labels("failed").inc()
            log.error("list confirmation deferred: %s", exc, extra={"queue_id": job.queue_id})
            return Outcome.OUTCOME_DEFERRED, UNAVAILABLE, "4.3.0"
        action = command.action
        other = listcookie.UNSUBSCRIBE if subscribe else listcookie.SUBSCRIBE
        body = DONE_BODY[action].format(
            address=command.address, list=cmd.list_address, owner=self._owner(cmd),
            other=listcookie.command_address(cmd.list_address, cmd.delimiter, other))
        subject = DONE_SUBJECT[action].format(list=cmd.list_address)
        qid = await self._send(cmd, command.address, subject, body)
        metrics.LIST_COMMANDS.labels("subscribed" if subscribe else "unsubscribed").inc()
        log.info("list membership changed by mail", extra={
            "queue_id": job.queue_id, "new_queue_id": qid, "list": cmd.list_address,
            "action": action})
        return Outcome.OUTCOME_DELIVERED, f"{action}d", "2.0.0"

    def _owner(self, cmd: ListCommand) -> str:
        return listaddresses.owner_command(cmd.list_address, cmd.delimiter, cmd.owner)

    async def _send(self, cmd: ListCommand, to: str, subject: str, body: str,
                    reply_to: str = "") -> str:
        utf8 = not (to.isascii() and cmd.list_address.isascii())
        msg = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
        local, _, domain = self._owner(cmd).rpartition("@")
        msg["From"] = Address(username=local, domain=domain)
        msg["To"] = autoreply._address(to)
        if reply_to:
            msg["Reply-To"] = reply_to
        msg["Subject"] = subject
        msg["Date"] = headers.date(time.time())
        msg["Message-ID"] = make_msgid("list", domain=self.settings.me)
        msg["Auto-Submitted"] = "auto-replied"
        msg.set_content(body, charset="utf-8", cte="7bit" if body.isascii() else "8bit")
        # from LIST+return@ as ezmlm, not <>: a bounce comes back to the list (returned()),
        # and a BATV-checking receiver takes it
        sender = listaddresses.return_address(cmd.list_address, cmd.delimiter)
        return await reinject.autoreply(self.spool, self.js, to, msg.as_bytes(),
                                        smtputf8=utf8, sender=sender)


def returned(job: DeliveryJob, list_address: str) -> tuple[int, str, str]:
    """Mail to LIST+return@ (the bounce of a request, welcome or goodbye, a robot's reply):
    accepted and dropped, as ezmlm-return drops what it cannot use; a bounce of it would go
    to a robot or a forger, and the list's members never see it."""
    metrics.LIST_COMMANDS.labels("returned").inc()
    log.info("mail to a list's return address dropped",
             extra={"queue_id": job.queue_id, "list": list_address})
    return Outcome.OUTCOME_DELIVERED, RETURNED.format(list=list_address), "2.0.0"


_REFUSALS = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
