"""tcpserver's -c (connections in total) and the per-client-IP limit.

The total is checked at accept. The per-IP limit is checked once the client's rule is known
(ehlo.greet), because relay clients are exempt, as Postfix exempts $mynetworks
(smtpd_client_event_limit_exceptions): a submission host or a load generator on a trusted
network reconnects the moment it has sent QUIT, and its old connection may still be counted
when the new one arrives.
"""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    def __init__(self, total: int, per_ip: int) -> None:
        self.max_total = total
        self.max_per_ip = per_ip
        self.total = 0
        self.by_ip: Counter[str] = Counter()  # admitted sessions of clients that count

    def acquire(self) -> bool:
        """Count a new connection; False (nothing counted) when the total is reached."""
        if self.total >= self.max_total:
            return False
        self.total += 1
        return True

    def admit(self, ip: str) -> bool:
        """Count a session against its IP; False (nothing counted) when the IP is full."""
        if self.by_ip[ip] >= self.max_per_ip:
            return False
        self.by_ip[ip] += 1
        return True

    def release(self, ip: str, admitted: bool) -> None:
        self.total -= 1
        if admitted:
            self.by_ip[ip] -= 1
            if self.by_ip[ip] <= 0:
                del self.by_ip[ip]
