"""Model configuration: a small frozen dataclass, read from a model folder's manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT-2-family model (letters from the legend in ``glassbox/__init__``)."""

    n_layer: int  # L
    n_head: int  # H
    n_embd: int  # D
    n_positions: int  # C
    vocab_size: int  # V
    n_inner: int | None = None  # F; None means 4 * D, as in GPT-2
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_size(self) -> int:
        """K = D / H."""
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        """F, the MLP's inner width."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        missing = {"n_layer", "n_head", "n_embd", "n_positions", "vocab_size"} - set(known)
        if missing:
            raise ValueError(f"config is missing {sorted(missing)}: not a GPT-2-family config")
        return cls(**known)
