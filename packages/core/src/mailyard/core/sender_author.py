"""The author behind an envelope sender that a signer or a forwarder rewrote per day: a
BATV tag taken off (mailyard.core.batv), an SRS address read back to the address it carries
(mailyard.core.srs, no hash check), in either order. For rules that must see one sender
(greylisting's triplet, vacation's once per sender, its automatic-sender rules); never for
where mail goes. Any string gives an answer, the address itself when nothing was rewritten."""

from __future__ import annotations

from mailyard.core import batv, srs


def author(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    local = batv.original_local(local)
    if srs.is_srs(local):  # a prefix test; a signed SRS address, or SRS of a signed one
        local, _, domain = srs.original(f"{local}@{domain}").rpartition("@")
        local = batv.original_local(local)
    return f"{local}@{domain}"
