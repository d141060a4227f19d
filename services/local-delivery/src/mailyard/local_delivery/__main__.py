"""`python -m mailyard.local_delivery` (console script mailyard-local-delivery)."""

from __future__ import annotations

from mailyard.core.service import run
from mailyard.local_delivery.settings import Settings
from mailyard.local_delivery.worker import serve


def main() -> None:
    run("local-delivery", Settings, serve)


if __name__ == "__main__":
    main()
