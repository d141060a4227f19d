"""tcpserver's -c (connections in total) and per-client-IP limits, checked at accept."""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    def __init__(self, total: int, per_ip: int) -> None:
        self.max_total = total
        self.max_per_ip = per_ip
        self.total = 0
        self.by_ip: Counter[str] = Counter()

    def acquire(self, ip: str) -> bool:
        if self.total >= self.max_total or self.by_ip[ip] >= self.max_per_ip:
            return False
        self.total += 1
        self.by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]
