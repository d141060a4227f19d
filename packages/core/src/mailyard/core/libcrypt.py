"""crypt(3) through the system's libxcrypt (`libcrypt.so.1`), for the hashes qmail hosts keep.

vpopmail's vpasswd holds DES, MD5-crypt ($1$), SHA-256/512-crypt ($5$, $6$) and sometimes
bcrypt ($2y$) hashes. libxcrypt is the implementation that wrote and checked them on the
old Linux host (glibc's crypt, then libxcrypt: PAM, shadow, Dovecot and Python's `crypt`
all call it), and Debian ships it in every system (libcrypt1, priority required; the
python:3.11-slim image has it because Python's own `_crypt` links it).

Why ctypes and not Python's `crypt` module: `crypt` is deprecated since 3.11 (a warning on
import) and gone in 3.13, and it keeps the GIL while bcrypt runs for a third of a second.
ctypes releases the GIL for the call, so the password pool's threads run on both cores.
`crypt_rn` is the reentrant form: each thread passes its own scratch area, no static
buffer is shared. Callers validate the setting string first (mailyard.core.password_hashes):
libcrypt quietly reads "bad$" as a DES salt "ba".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import cache
from typing import Any

_SCRATCH = 65536  # >= sizeof(struct crypt_data) (32,768 + a few bytes in libxcrypt 4.4)
_local = threading.local()


class CryptUnavailable(RuntimeError):
    """libcrypt is not installed (it is on every Debian system)."""


@cache
def _crypt_rn() -> Any:  # a ctypes foreign function
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name)
        fn = lib.crypt_rn
    except (OSError, AttributeError) as exc:
        raise CryptUnavailable(f"libcrypt (crypt_rn) not available: {exc}") from None
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    return fn


def crypt(password: bytes, setting: str) -> str | None:
    """crypt(3) of `password` with `setting` (a stored hash or its salt part); None when
    libcrypt refuses the setting. A password with a NUL cannot be passed to C: None."""
    if b"\0" in password:
        return None
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        scratch = _local.scratch = ctypes.create_string_buffer(_SCRATCH)
    out = _crypt_rn()(password, setting.encode("ascii"), scratch, _SCRATCH)
    if out is None or out.startswith(b"*"):
        return None
    return out.decode("ascii", errors="replace")
