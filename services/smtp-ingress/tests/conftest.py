"""smtp-ingress test fixtures (defined in ingress_helpers, importable by the tests)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ingress_helpers import (
    ca,
    client_tls,
    ingress,
    local,
    make_ingress,
    relay_auth,
    tls_files,
)

__all__ = ["ca", "client_tls", "ingress", "local", "make_ingress", "relay_auth",
           "tls_files"]
