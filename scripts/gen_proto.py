"""Generate packages/api/src/mailyard/api from proto/ (python, .pyi, gRPC stubs).

protoc names Python modules after the .proto path, so `mailyard/queue/v1/queue.proto` would
become `mailyard.queue.v1`, inside the queue service's own package. The generated code is
moved under `mailyard.api` instead and its imports rewritten to match.

    python scripts/gen_proto.py          # regenerate in place
    python scripts/gen_proto.py --check  # exit 1 if the committed code differs from proto/
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
TARGET = ROOT / "packages" / "api" / "src" / "mailyard" / "api"
IMPORT = re.compile(r"^(from|import) mailyard\.(?!api\.)", re.MULTILINE)
DOTTED = re.compile(r"\bmailyard\.(mail|queue|relayauth|directory|control|routing|history)\.v1\b")


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    raw = out / "raw"
    raw.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={raw}",
         f"--mypy_out={raw}", f"--grpc_python_out={raw}", f"--mypy_grpc_out={raw}", *protos],
        check=True, cwd=PROTO,
        # the mypy plugins are scripts beside this interpreter
        env={**os.environ,
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    api = out / "api"
    shutil.copytree(raw / "mailyard", api)
    for path in sorted(api.rglob("*.py*")):
        text = path.read_text()
        text = IMPORT.sub(r"\1 mailyard.api.", text)
        if path.suffix == ".pyi":
            text = DOTTED.sub(lambda m: f"mailyard.api.{m.group(1)}.v1", text)
        path.write_text(text)
    for folder in [api, *(p for p in api.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    (api / "py.typed").touch()


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(
        same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        if "--check" in sys.argv:
            if TARGET.exists() and same_tree(out / "api", TARGET):
                print("generated code matches proto/")
                return 0
            print("packages/api is stale: run `make proto` and commit", file=sys.stderr)
            return 1
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(out / "api", TARGET)
    print(f"generated {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
