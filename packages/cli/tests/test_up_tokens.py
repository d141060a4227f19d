"""`mailyard up`'s token table and local-delivery's way to the directory (a list member's
confirmation by mail), without starting anything."""

from __future__ import annotations

from pathlib import Path

from mailyard.cli.platform import Platform
from mailyard.core import auth


def test_local_delivery_gets_the_directory_and_a_listmail_token(tmp_path: Path) -> None:
    """An upgraded host's table, made before the listmail role, kept its lines and had
    none: local-delivery could not confirm a list member. The role is added, the rest
    stays; local-delivery is told where the directory is."""
    platform = Platform(data_dir=tmp_path, dovecot=False)
    table = platform.tokens_file
    table.parent.mkdir(parents=True)
    old = "".join(f"{role} {auth.new_token()}\n" for role in auth.ROLES if role != "listmail")
    table.write_text(old)
    platform.ensure_tokens()
    text = table.read_text()
    assert text.startswith(old)
    assert auth.read_token(table, "listmail")
    platform.ensure_tokens()
    assert table.read_text() == text  # nothing more on the next start
    spec = next(s for s in platform.specs() if s.name == "local-delivery")
    env = platform.env_for(spec)
    assert env["MAILYARD_LOCAL_DIRECTORY_ADDR"] == f"127.0.0.1:{platform.ports.directory_grpc}"
    assert Path(env["MAILYARD_LOCAL_TOKEN_FILE"]) == table
