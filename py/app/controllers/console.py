"""The Python console on the page: code runs in the page's namespace (``trace``, ``tokens``,
``ids``, ``model``, ``dist``, ``np``, ``explainer``); ``print()`` output, the value of the last
expression and tracebacks (without the console's own frames) go to ``console-output``, which
scrolls to the newest entry. ``help()`` lists the live objects."""

from __future__ import annotations

import contextlib
import io
import pydoc
import traceback

import numpy as np

from ..console import FILENAME
from .base import Controller

KEEP = 40  # entries kept in the output


class ConsoleController(Controller):
    name = "console"
    actions = {
        "console-run": lambda c, value, data: c.ex.spawn(c.run(value)),
        "console-clear": lambda c, value, data: c.clear(),
        "console-focus": lambda c, value, data: c.ui.focus("console-input"),
    }

    def __init__(self, explainer, run_code=None):
        super().__init__(explainer)
        self.run_code = run_code
        self.entries: list[str] = []

    def log(self, text: str) -> None:
        self.entries = (self.entries + [text.rstrip()])[-KEEP:]
        self.ui.set_text("console-output", "\n".join(self.entries))
        self.ui.scroll_to_end("console-output")

    def help(self, obj=None) -> None:
        """help() lists the live objects; help(x) prints x's documentation."""
        if obj is not None:
            print(pydoc.render_doc(obj, renderer=pydoc.plaintext))
            return
        print(live_objects(self.ex.namespace))

    async def run(self, code: str) -> str:
        """Run ``code``; its printed output and value (or traceback) become one entry."""
        if self.run_code is None:
            return ""
        self.ex.update_namespace()
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                value = await self.run_code(code, self.ex.namespace)
            out = "" if value is None else show(value)
        except Exception as exc:  # noqa: BLE001  (a console shows errors, it does not raise them)
            out = user_traceback(exc)
        out = printed.getvalue() + out
        self.log(f">>> {code}\n{out}")
        return out

    def clear(self) -> None:
        self.entries = []
        self.ui.set_text("console-output", "")


def user_traceback(exc: BaseException) -> str:
    """The traceback from the user's code down: frames of the console machinery left out."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def live_objects(namespace: dict) -> str:
    """One line per object the console holds (arrays with shape and dtype)."""
    lines = ["Live objects (help(x) for one of them):"]
    for name, value in sorted(namespace.items()):
        if name.startswith("_") or name in ("help", "print"):
            continue
        if isinstance(value, np.ndarray):
            what = f"array shape={value.shape} dtype={value.dtype}"
        elif name == "np":
            what = f"numpy {np.__version__}"
        else:
            doc = type(value).__doc__  # not always a string (a JsProxy's type has a descriptor there)
            doc = doc.strip().splitlines() if isinstance(doc, str) else []
            what = type(value).__name__ + (f": {doc[0]}" if doc and type(value).__module__ != "builtins" else "")
            if name == "trace" and value is not None:
                what += f" — {len(value)} tensors: trace.keys(), trace['h.0.att']"
        lines.append(f"  {name:<10} {what}")
    return "\n".join(lines)


def show(value) -> str:
    """A console's answer: numpy arrays with their shape and dtype, the rest as repr."""
    with np.printoptions(precision=4, threshold=200, edgeitems=3, linewidth=88):
        if isinstance(value, np.ndarray):
            return f"array shape={value.shape} dtype={value.dtype}\n{value!r}"
        text = repr(value)
    return text if len(text) < 20000 else text[:20000] + " …"
