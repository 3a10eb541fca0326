"""Run Python text in the page and answer in JSON: the engine of ``window.glassbox_py``.

Code runs in one namespace kept across calls (like a console); top-level ``await`` works;
the value of a final expression is the answer. numpy arrays and scalars become lists and
numbers. Errors come back as text, never as a half-written answer.
"""

from __future__ import annotations

import ast
import inspect
import json
import linecache
import traceback

FILENAME = "<glassbox_py>"
FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


async def run_code(code: str, namespace: dict):
    """Execute code in namespace; return the value of its last expression (else None)."""
    # Tracebacks quote the code's own lines (the latest snippet's, as an interactive console does).
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    tree = ast.parse(code, FILENAME, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    for node, mode in ((tree, "exec"), (last, "eval")):
        if node is None:
            continue
        result = eval(compile(node, FILENAME, mode, flags=FLAGS), namespace)  # noqa: S307
        if inspect.iscoroutine(result):
            result = await result
    return result if last is not None else None


def _plain(value):
    """json.dumps hook: numpy arrays and scalars to lists and numbers."""
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return value.tolist()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def to_json(value) -> str:
    """Strict JSON (no NaN/Infinity, which JSON.parse rejects)."""
    return json.dumps(value, default=_plain, allow_nan=False)


class Console:
    """A namespace that successive snippets share."""

    def __init__(self, names: dict | None = None):
        self.namespace: dict = {"__name__": "__console__", **(names or {})}

    async def run_json(self, code: str) -> str:
        """'{"value": ...}' or '{"error": "<traceback>"}'."""
        try:
            return '{"value": %s}' % to_json(await run_code(code, self.namespace))
        except Exception:  # noqa: BLE001  (every failure goes back to the caller as text)
            return json.dumps({"error": traceback.format_exc()})
