"""A model ready to run: checkpoint + tokenizer + the numpy forward, and the text-level API.

Text policy (one place, used by the CLI and the app): empty text is refused; text longer
than the context keeps its last C tokens, and ``Prompt.dropped`` says how many were cut.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import reference, weights
from .errors import InputError
from .sampling import Distribution, distribution, sample
from .tokenizer import Tokenizer, run_steps
from .trace import Trace


def check_text(text: str) -> str:
    """Raise InputError unless ``text`` is encodable Unicode (no lone surrogates, which bytes
    that are not UTF-8 become on a command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"the text is not valid UTF-8 (character {e.start + 1} is a stray byte "
                         f"{ord(text[e.start]) & 0xFF:#04x}): give UTF-8 text") from None
    return text


@dataclass(frozen=True)
class Prompt:
    ids: np.ndarray  # [N] the ids that run (at most C)
    dropped: int  # leading tokens cut to fit the context


def tokenizer_from_files(manifest: dict, files: dict[str, bytes]) -> Tokenizer:
    """The tokenizer a manifest names, built from ``files`` (name -> bytes), each checked
    against the manifest's sha256. Callers fetch bundled files from the model folder and the
    others from GPT-2's vendored vocabulary (vendor/gpt2)."""
    return run_steps(tokenizer_steps(manifest, files))


def tokenizer_steps(manifest: dict, files: dict[str, bytes]):
    """``tokenizer_from_files`` as a generator of steps (Tokenizer.from_bytes_steps) that
    returns the Tokenizer: a page hands the browser a turn at each step (issue 16, hw20)."""
    for name, entry in manifest["tokenizer"].items():
        if name not in files:
            raise weights.WeightsError(f"tokenizer file {name} not found; run `python3 tools/vendor.py` "
                                       "to fetch GPT-2's vocabulary")
        actual = weights.sha256_hex(files[name])
        if actual != entry["sha256"]:
            raise weights.WeightsError(f"tokenizer file {name} has sha256 {actual}, the manifest expects {entry['sha256']}")
    return (yield from Tokenizer.from_bytes_steps(files["encoder.json"], files["vocab.bpe"]))


class Model:
    """Checkpoint + tokenizer; runs the numpy reference forward."""

    def __init__(self, checkpoint: weights.Checkpoint, tokenizer: Tokenizer, name: str = ""):
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.tokenizer = tokenizer
        self.name = name
        self._params: weights.LazyParams | None = None
        if tokenizer.vocab_size > self.config.vocab_size:
            raise weights.WeightsError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {self.config.vocab_size}")

    @property
    def params(self) -> weights.LazyParams:
        """float32 parameters, each made when first read (weights.LazyParams)."""
        if self._params is None:
            self._params = weights.LazyParams(self.checkpoint)
        return self._params

    def keep_quantized(self, kernel=None) -> None:
        """Run on the stored int8/q4 matrices from now on (``Checkpoint.linear_params``, issue
        15): no float32 copy of the model; ``kernel`` (qlinear.LinearKernel) multiplies int8 in SIMD."""
        self._params = self.checkpoint.linear_params(kernel)

    def prompt(self, text: str) -> Prompt:
        """Tokenize ``text`` under the text policy in this module's docstring."""
        if not text:
            raise InputError("the text is empty: type something for the model to continue")
        check_text(text)
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        limit = self.config.n_positions
        dropped = max(0, ids.size - limit)
        return Prompt(ids=ids[dropped:], dropped=dropped)

    def forward(self, ids, cache: reference.KVCache | None = None, capture=None) -> Trace:
        return reference.forward(self.params, self.config, ids, cache=cache, capture=capture)

    def next_token(self, text: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   capture=None) -> tuple[Prompt, Trace, Distribution]:
        prompt = self.prompt(text)
        trace = self.forward(prompt.ids, capture=capture)
        return prompt, trace, distribution(trace.logits[-1], temperature, top_k, top_p)

    def generate(self, text: str, n: int, rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> tuple[Prompt, list[int]]:
        """Sample ``n`` tokens with the KV cache; stops early when the context is full."""
        prompt = self.prompt(text)
        return prompt, self.generate_ids(prompt, n, rng, temperature, top_k, top_p)

    def generate_ids(self, prompt: Prompt, n: int, rng: np.random.Generator, temperature: float = 1.0,
                     top_k: int = 0, top_p: float = 1.0) -> list[int]:
        """:meth:`generate` from an already tokenized prompt."""
        cache = reference.KVCache(self.config)
        logits = self.forward(prompt.ids, cache=cache, capture=lambda name: False).logits[-1]
        out: list[int] = []
        for _ in range(n):
            token = sample(distribution(logits, temperature, top_k, top_p), rng)
            out.append(token)
            if cache.length >= self.config.n_positions or len(out) == n:
                break
            logits = self.forward([token], cache=cache, capture=lambda name: False).logits[-1]
        return out


def load(path: str, vocab_dir: str | None = None) -> Model:
    """Load a model folder from disk (native CLI and tests; the page loads from fetched bytes)."""
    checkpoint = weights.load_folder(path)
    files = {}
    for name, entry in checkpoint.manifest["tokenizer"].items():
        folder = path if entry.get("bundled", True) else vocab_dir
        file = os.path.join(folder, name) if folder else None
        if file and os.path.exists(file):
            with open(file, "rb") as f:
                files[name] = f.read()
    return Model(checkpoint, tokenizer_from_files(checkpoint.manifest, files), os.path.basename(os.path.normpath(path)))


def default_model_dir(root: str) -> str:
    """weights/gpt2 when a user has converted real GPT-2 there, else the committed small model."""
    for name in weights.PREFERRED:
        folder = os.path.join(root, "weights", name)
        if os.path.exists(os.path.join(folder, weights.MANIFEST)):
            return folder
    return os.path.join(root, "weights", weights.PREFERRED[-1])
