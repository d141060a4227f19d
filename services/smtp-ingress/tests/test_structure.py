"""The module graph of smtp-ingress: no import cycles at run time, no imports hidden in
function bodies to dodge one, and every reply text in replies.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mailyard.smtp_ingress import replies as R

PACKAGE = "mailyard.smtp_ingress"
SRC = Path(R.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Our modules imported at module level, outside `if TYPE_CHECKING:`."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            found.add(node.module)
            for alias in node.names:  # `from mailyard.smtp_ingress import replies`
                candidate = f"{node.module}.{alias.name}"
                if (SRC / f"{candidate[len(PACKAGE) + 1:].replace('.', '/')}.py").exists():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGE)}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(p): _runtime_imports(ast.parse(p.read_text())) for p in SRC.rglob("*.py")}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep in (node, PACKAGE):
                continue
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    # the phase modules stand above the session: they never import it at run time
    for phase in ("ehlo", "auth", "mail", "rcpt", "data", "policy"):
        assert f"{PACKAGE}.session" not in graph[f"{PACKAGE}.{phase}"], phase


def test_no_imports_in_function_bodies() -> None:
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    assert not isinstance(inner, ast.Import | ast.ImportFrom), \
                        f"{path.name}:{inner.lineno} imports inside {node.name}()"


def test_reply_texts_live_in_replies() -> None:
    """No other module spells out an SMTP reply ("250 ...", "553 5.7.1 ...")."""
    reply = re.compile(r"""(?<![\w.])[bf]?["'][2-5][0-9][0-9][ -]""")
    for path in SRC.rglob("*.py"):
        if path.name == "replies.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not reply.search(code), f"{path.name}:{number}: {line.strip()}"


def test_qmail_texts_verbatim() -> None:
    """People grep their logs for qmail-smtpd's words: keep them exactly."""
    assert R.RCPTHOSTS.endswith("sorry, that domain isn't in my list of allowed rcpthosts")
    assert R.BADMAILFROM.endswith("sorry, your envelope sender is in my badmailfrom list")
    assert R.DATABYTES.endswith("sorry, that message size exceeds my databytes limit")
    assert R.UNKNOWN_USER.endswith("sorry, no mailbox here by that name")
    assert R.CLIENT_DENIED.endswith("sorry, your IP address is not allowed to connect")
    assert R.VRFY == "252 2.5.2 send some mail, i'll try my best"
    assert R.BARE_LF_COMMAND.endswith("see https://cr.yp.to/docs/smtplf.html")
    assert R.GO_AHEAD == "354 go ahead"
