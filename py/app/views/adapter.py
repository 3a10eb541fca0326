"""The compute-backend card: which WebGPU adapter runs the model, or that numpy does."""

from __future__ import annotations

from html import escape

from ..webgpu import AdapterInfo

SWITCH_LABELS = {"numpy": "Run on numpy instead", "webgpu": "Run on WebGPU instead"}  # issue 15


def render(adapter: AdapterInfo | None, backend: str, versions: dict[str, str], reason: str = "",
           cause: str = "", switch: str = "") -> str:
    """HTML for the backend card; the adapter's name carries data-testid="adapter", and
    ``reason`` (why this backend runs: app/gpu_runner.py's Status) data-testid="backend-reason"
    with ``cause`` in its data-cause. numpy with an adapter needs a reason (e.g. device lost).
    ``switch`` ("numpy" or "webgpu"; issue 15) adds the reader's button that runs the model on
    that backend instead (data-backend-switch; app/gpu_light.py handles it)."""
    if backend not in ("webgpu", "numpy"):
        raise ValueError(f"unknown backend {backend!r}")
    if adapter is None and backend == "webgpu":
        raise ValueError("backend 'webgpu' needs an adapter")
    if switch not in ("", *SWITCH_LABELS) or switch == backend:
        raise ValueError(f"cannot offer a switch to {switch!r} while {backend} runs")
    if adapter is not None and backend == "numpy" and not reason:
        raise ValueError("backend 'numpy' beside an adapter needs a reason")
    rows = []
    if adapter is None:
        name = "No WebGPU adapter: the model runs on numpy in Python (slower)"
    else:
        name = adapter.name
        rows += [("Vendor", adapter.vendor), ("Architecture", adapter.architecture),
                 ("Device", adapter.device), ("Description", adapter.description)]
        if adapter.fallback:
            rows.append(("Note", "software fallback adapter (no hardware GPU)"))
    rows += [(f"{package} version", version) for package, version in versions.items()]
    facts = "".join(
        f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in rows if value
    )
    return (
        '<section class="card backend" data-testid="backend">'
        f'<h2>Compute backend <span class="backend-badge">{escape(backend)}</span></h2>'
        f'<p class="adapter-name" data-testid="adapter">{escape(name)}</p>'
        + (f'<p class="backend-reason" data-testid="backend-reason" data-cause="{escape(cause)}">{escape(reason)}</p>'
           if reason else "") +
        (f'<p class="backend-switch"><button type="button" class="pwa-button" data-backend-switch="{switch}" '
         f'data-testid="backend-switch">{SWITCH_LABELS[switch]}</button></p>' if switch else "") +
        f'<dl class="facts">{facts}</dl>'
        "</section>"
    )
