"""Sampling: temperature, top-k, top-p and Sample again. Never runs the model: a change
rebuilds the distribution from the last logits row and draws again."""

from __future__ import annotations

import numpy as np

from ..views import controls
from ..views.common import fmt
from .base import Controller


class SamplingController(Controller):
    name = "sampling"
    actions = {
        "resample": lambda c, value, data: c.resample(),
        "temperature": lambda c, value, data: c.input("temperature", value),
        "top-k": lambda c, value, data: c.input("top-k", value),
        "top-p": lambda c, value, data: c.input("top-p", value),
    }

    def __init__(self, explainer):
        super().__init__(explainer)
        self.temperature, self.top_k, self.top_p = 0.8, 0, 0.95

    def set(self, temperature=None, top_k=None, top_p=None) -> None:
        t = self.temperature if temperature is None else float(temperature)
        k = self.top_k if top_k is None else int(float(top_k or 0))
        p = self.top_p if top_p is None else float(top_p)
        t = min(max(t, 0.0), 3.0) if np.isfinite(t) else self.temperature
        k = min(max(k, 0), self.ex.config.vocab_size)
        p = min(max(p, 0.01), 1.0) if np.isfinite(p) else self.top_p
        self.temperature, self.top_k, self.top_p = t, k, p
        self.ui.set_text("temperature-out", "0 (greedy)" if t == 0 else fmt(t, 3))
        self.ui.set_text("top-k-out", str(k) if k else "off")
        self.ui.set_text("top-p-out", fmt(p, 3) if p < 1 else "1 (off)")
        self.resample()

    def input(self, field: str, raw: str) -> None:
        """One sampling control's raw value, checked by controls.parse_sampling (issue 9): a
        clamped value is written back to the control, a refused one leaves the setting as it
        was; either way the message shows under the controls."""
        value, message = controls.parse_sampling(field, raw, self.ex.config.vocab_size)
        self.ui.set_text("sampling-message", message)
        self.ui.set_prop("sampling-message", "hidden", not message)
        self.ui.set_attr(field, "aria-invalid", "true" if value is None else "false")
        if value is None:
            return
        if message:
            self.ui.set_value(field, str(value))
        self.set(**{field.replace("-", "_"): value})

    def resample(self) -> None:
        ex = self.ex
        if ex.trace is None or ex.run.busy:
            return
        ex.sample()
        ex.update_namespace()
        ex.run.render(), ex.output.render(), ex.map.render()
        ex.run.status(f"Sampled ‘{ex.vocab[ex.sampled]}’ again from the same logits (the model did not run).")
