"""Who may sign with a domain's DKIM keys. Every hosted domain is another customer: a
signature of b.test on mail joe@a.test wrote as ceo@b.test passes DMARC as b.test, so the
platform would lend one customer's name to another. An AUTH login signs with the keys of
its own domain (From: that domain or, relaxed alignment, a subdomain of it that has no
keys of its own) and of its subdomains that are no hosted domain (news.a.test, made for
a.test's newsletters; a hosted dept.a.test is a customer of its own), and with those of a
From: address the directory leads to the login alone (an alias given to it in another
hosted domain, as mail_sender_login decides "own" for the envelope sender): the signature
then names that address's domain itself.

A POP-before-SMTP lease holder is the login the lease names (who logged in from the
address, or the mailbox an operator granted it to); an open-smtp lease carried over from
vpopmail names nobody and signs for no domain. A tcp.smtp RELAYCLIENT rule is the
postmaster's trust in a host (the webmail, a customer's web server) for everything it
sends, as OpenDKIM's InternalHosts: signed for any domain with keys. A login on such a host
(webmail users authenticate) is that login.

Compared: the signing key's domain (what d= asserts; the From: domain or its nearest
parent with keys) with the login's domain, both lower-case A-labels. The usual case, a
user writing from its own domain, is that one string comparison."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.core.directory import canonical
from mailyard.core.dkim_sign import domain_of
from mailyard.smtp_ingress.policy.mail_sender_login import leads_only_to

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


def may_sign(s: Session, key_domain: str, address: str) -> bool | None:
    """May this session's message, From: `address`, be signed with `key_domain`'s keys?
    None: cannot be told yet (the directory view is not loaded)."""
    login = s.auth_user
    if not login:
        client = s.client
        if client is None or client.decided_by != ra.DECIDER_LEASE:
            return True  # a relay rule's host: trusted for all it sends
        login = client.lease_user
        if "@" not in login:  # an open-smtp lease carried over names nobody
            return False
    if key_domain == login.rpartition("@")[2]:
        return True
    login = canonical(login)  # a lease granted by hand names the mailbox as it was typed
    own = login.rpartition("@")[2]
    if key_domain == own:
        return True
    directory = s.app.directory
    if not directory.ready:  # whose a subdomain or an alias is cannot be told yet
        return None
    real = directory.real_domain(key_domain)
    if real is not None and real.name == own:  # an alias domain of the login's domain
        return True
    # keys of a subdomain are the domain's, unless it is hosted: a customer of its own
    if key_domain.endswith("." + own) and not directory.is_local_domain(key_domain):
        return True
    if key_domain != domain_of(address):  # a parent's keys: only the parent's own users
        return False
    local = address.rpartition("@")[0]
    return leads_only_to(directory, canonical(f"{local}@{key_domain}"), login)
