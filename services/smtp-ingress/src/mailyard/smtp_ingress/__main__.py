"""python -m mailyard.smtp_ingress"""

from __future__ import annotations

from mailyard.core.service import run
from mailyard.smtp_ingress.server import serve
from mailyard.smtp_ingress.settings import Settings


def main() -> None:
    run("smtp-ingress", Settings, serve)


if __name__ == "__main__":
    main()
