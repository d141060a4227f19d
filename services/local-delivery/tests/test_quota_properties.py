"""maildirsize (a file anyone with access to the Maildir can write) under hostile bytes:
read() returns usage or None (rebuild), never raises; what it returns is what the lines say."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.local_delivery.quota import FILE, Quota, read

QUOTA = Quota(bytes=1000, messages=10)
line = st.tuples(st.integers(-10**6, 10**9), st.integers(-100, 10**4)).map(
    lambda t: f"{t[0]} {t[1]}".encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000))
def test_any_bytes_give_usage_or_a_rebuild(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, FILE).write_bytes(raw)
        got = read(Path(folder), QUOTA)
    assert got is None or (isinstance(got[0], int) and isinstance(got[1], int))


@settings(max_examples=200, deadline=None)
@given(st.lists(line, max_size=30))
def test_well_formed_lines_are_summed(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, FILE).write_bytes(b"\n".join([b"1000S,10C", *lines]) + b"\n")
        got = read(Path(folder), QUOTA)
    if len(b"\n".join([b"1000S,10C", *lines])) + 1 > 5120:
        assert got is None  # too big: counted again from the folders
    else:
        pairs = [tuple(int(x) for x in raw.split()) for raw in lines]
        used = (sum(p[0] for p in pairs), sum(p[1] for p in pairs))
        assert got == (used if min(used) >= 0 else None)  # below zero: damaged, recounted


def test_another_quota_definition_means_rebuild(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(b"5000S\n10 1\n")
    assert read(tmp_path, QUOTA) is None
