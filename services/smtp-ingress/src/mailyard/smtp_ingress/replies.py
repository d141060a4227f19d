"""Every reply smtp-ingress sends, in one place (notqmail keeps qmail-smtpd's in one block).

qmail-smtpd's texts are kept verbatim, with an RFC 3463 enhanced status code in front:
postmasters grep their logs and their users' bounces for them. The tests assert on these
names, so changing a text here changes it everywhere it is sent and checked.
"""

from __future__ import annotations

from mailyard.smtp_ingress.message_body import HEAD

# -- connection ----------------------------------------------------------------------------


def greeting(me: str) -> str:
    return f"220 {me} ESMTP mailyard"


PREGREET = "554 5.5.0 sorry, you talked before my greeting"   # RFC 5321 3.1
CLIENT_DENIED = "553 5.7.1 sorry, your IP address is not allowed to connect"
TOO_MANY_CONNECTIONS = "421 4.3.2 too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 service shutting down, try again later"
INTERNAL_ERROR = "421 4.3.0 internal error, closing connection"
TIMEOUT = "451 4.4.2 timeout"


def too_many_errors(me: str) -> str:
    """HARD_ERROR_LIMIT reached (Postfix's smtpd_hard_error_limit, in its words)."""
    return f"421 4.7.0 {me} Error: too many errors"


# -- command lines -------------------------------------------------------------------------

BARE_LF_COMMAND = "500 5.5.2 bare LF or CR in command, see https://cr.yp.to/docs/smtplf.html"
LINE_TOO_LONG = "500 5.5.2 line too long"
NUL_IN_COMMAND = "501 5.5.2 NUL in command"
BAD_UTF8 = "501 5.5.2 invalid UTF-8 in command"
UNIMPLEMENTED = "502 5.5.1 unimplemented"

# -- HELO / EHLO / STARTTLS / the small verbs ----------------------------------------------


def helo_syntax(verb: str) -> str:
    return f"501 5.5.4 syntax: {verb} hostname"


def helo_ok(me: str) -> str:
    return f"250 {me}"


def ehlo(me: str, keywords: list[str]) -> str:
    """The multi-line EHLO reply: our name, then one keyword per line."""
    lines = [me, *keywords]
    return "\r\n".join([f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"])


STARTTLS_UNAVAILABLE = "503 5.5.1 STARTTLS not available"
STARTTLS_SYNTAX = "501 5.5.4 syntax: STARTTLS"
STARTTLS_READY = "220 2.0.0 ready to start TLS"
OK = "250 2.0.0 ok"
FLUSHED = "250 2.0.0 flushed"
VRFY = "252 2.5.2 send some mail, i'll try my best"
HELP = "214 2.0.0 mailyard smtp-ingress, see RFC 5321"


def quit_reply(me: str) -> str:
    return f"221 2.0.0 {me}"


# -- AUTH ----------------------------------------------------------------------------------

AUTH_OK = "235 2.7.0 authentication successful"
AUTH_FAILED = "535 5.7.8 authentication failed"
AUTH_THROTTLED = "454 4.7.0 too many AUTH failures, try again later"
AUTH_UNAVAILABLE = "454 4.7.0 temporary authentication failure, try again later"
AUTH_EHLO_FIRST = "503 5.5.1 send EHLO first"
AUTH_ALREADY = "503 5.5.1 already authenticated"
AUTH_IN_TRANSACTION = "503 5.5.1 AUTH not allowed during a mail transaction"
STARTTLS_FIRST = "530 5.7.0 must issue a STARTTLS command first"
AUTH_MECHANISM = "504 5.5.4 unrecognized authentication type"
AUTH_MECHANISM_UNAVAILABLE = ("534 5.7.9 authentication mechanism not available for this "
                              "account, use PLAIN or LOGIN")
AUTH_ABORTED = "501 5.0.0 AUTH aborted"
AUTH_TOO_MANY_FAILURES = "421 4.7.0 too many AUTH failures, closing connection"


def auth_challenge(challenge: str) -> str:
    return f"334 {challenge}"


# -- MAIL / RCPT and address syntax --------------------------------------------------------

HELO_FIRST = "503 5.5.1 send HELO or EHLO first"
NESTED_MAIL = "503 5.5.1 nested MAIL command"
MAIL_SYNTAX = "501 5.5.4 syntax: MAIL FROM:<address>"
MAIL_OK = "250 2.1.0 ok"
PARAMS_NEED_EHLO = "555 5.5.4 parameters need EHLO"
NON_ASCII = "553 5.6.7 non-ASCII address requires SMTPUTF8"
INSUFFICIENT_STORAGE = "452 4.3.1 insufficient system storage"  # Postfix's words


def unsupported_parameter(key: str) -> str:
    return f"555 5.5.4 unsupported parameter {key[:32]}"


MAIL_FIRST = "503 5.5.1 MAIL first"
RCPT_SYNTAX = "501 5.5.4 syntax: RCPT TO:<address>"
RCPT_PARAMETER = "555 5.5.4 unsupported RCPT parameter"
RCPT_OK = "250 2.1.5 ok"

ADDRESS_NOT_BRACKETED = "501 5.5.4 syntax error: address must be in <>"
ADDRESS_UNTERMINATED = "501 5.5.4 syntax error: unterminated <address>"
BAD_ADDRESS = "501 5.1.7 bad address syntax"
BAD_RECIPIENT = "501 5.1.3 bad recipient address syntax"
ADDRESS_TOO_LONG = "501 5.1.7 address too long"

# -- DATA ----------------------------------------------------------------------------------

RCPT_FIRST = "503 5.5.1 RCPT first"
DATA_SYNTAX = "501 5.5.4 syntax: DATA"
GO_AHEAD = "354 go ahead"
BARE_LF_DATA = "451 4.5.2 bare LF or CR in message, see https://cr.yp.to/docs/smtplf.html"
NOT_ACCEPTED = "451 4.3.0 temporary failure, message not accepted, try again later"
# RFC 5322 2.3 and 8BITMIME forbid NUL; a "\x00." line is the "nullbefore" smuggling
# sequence for a next hop that drops NULs
NUL_IN_DATA = "554 5.6.0 sorry, message contains NUL characters, refused"


def queued(queue_id: str) -> str:
    return f"250 ok {queue_id}"


# -- policy checks (qmail's texts) ---------------------------------------------------------

RCPTHOSTS = "553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts"
BADMAILFROM = "553 5.7.1 sorry, your envelope sender is in my badmailfrom list"
DATABYTES = "552 5.3.4 sorry, that message size exceeds my databytes limit"
HOPS = "554 5.4.6 too many hops, this message is looping"
HEADER_TOO_LARGE = f"552 5.6.0 sorry, the header of this message is larger than {HEAD} octets"
UNKNOWN_USER = "550 5.1.1 sorry, no mailbox here by that name"
# a bounce to an SRS address (a forward's rewritten sender) we did not make, or made more
# than 21 days ago: no relaying through it (core.srs)
SRS_INVALID = ("550 5.1.1 sorry, this SRS address is invalid or expired: no bounce can be "
               "returned through it")
TOO_MANY_RCPTS = "452 4.5.3 too many recipients"
UNAVAILABLE = "451 4.3.0 temporary failure, try again later"
RELAY_UNAVAILABLE = "451 4.3.0 cannot check relaying right now, try again later"
AUTH_REQUIRED = "530 5.7.0 authentication required"
# the content scanner's verdicts, in simscan's words
SPAM = "554 5.7.1 sorry, this message looks like spam"
SPAM_LATER = "451 4.7.1 sorry, this message looks like spam, try again later"
GREYLISTED = "451 4.7.1 greylisted, please try again later"
NULL_MX = "550 5.7.27 sorry, your envelope sender domain accepts no mail (null MX, RFC 7505)"


def list_command(mlist: str, owner_address: str) -> str:
    """rcpt_unknown_user: a command address of a list (news-subscribe@) that this host does
    not serve by mail; never posted to the list."""
    return (f"550 5.7.1 sorry, {mlist} takes no commands by mail; write to {owner_address}")


def list_post_refused(why: str) -> str:
    """data_list_posting: the list's posting policy refuses this poster, in the words
    local-delivery's bounce uses (list_posting), without qmail's (#5.7.2)."""
    return f"550 5.7.2 {why.removesuffix(' (#5.7.2)')}"


def sender_not_owned(address: str, user: str) -> str:
    """mail_sender_login: an AUTH user's MAIL FROM that is not its own, in Postfix's words
    (reject_sender_login_mismatch), which postmasters and users search for."""
    return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {user}"


def spf_fail(domain: str, ip: str) -> str:
    return (f"550 5.7.23 sorry, SPF of {domain[:100]} does not allow {ip} to send its mail "
            "(RFC 7208)")


def dmarc_reject(domain: str) -> str:
    return (f"550 5.7.1 sorry, {domain[:100]} asks receivers to reject mail that fails "
            "its DMARC policy, and this message does")


# a relay on the way would fold such a line and break the DKIM signature
LINE_TOO_LONG_TO_SIGN = ("554 5.6.0 sorry, a line of this message is longer than 998 "
                         "octets (RFC 5322 2.1.1), so it cannot be DKIM-signed")


def dnsbl(text: str, permanent: bool) -> str:
    """rblsmtpd: the list's TXT text, made printable ASCII and cut to 300 characters."""
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:300]
    return f"553 5.7.1 {clean}" if permanent else f"451 4.7.1 {clean}"
