"""Bad input, class by class (issue 9): every refusal is one readable line on stderr with
exit code 2 and no traceback; every --json output is strict, finite JSON.

Command-line options, converter input and model folders here; the GPU backend's fallbacks
in tests/gpu/test_cli_backend.py; the dev server in tests/test_serve.py; the page's sampling
inputs in tests/test_app.py and tests/e2e/test_inputs.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from glassbox import safetensors, weights
from glassbox.cli import DEFAULT_VOCAB, ROOT, main
from glassbox.config import GPTConfig
from glassbox.errors import ConvertError, GlassboxError, InputError, OptionsError, WeightsError
from glassbox.sampling import GREEDY_BELOW, distribution

MINI = os.path.join(ROOT, "weights", "mini")


def refused(argv, capsys, *needles) -> str:
    """Run the CLI in-process; assert exit 2 and one line on stderr naming every needle."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (argv, captured.out, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def strict_json(text: str):
    """json.loads that refuses NaN and infinity, as a strict parser (JavaScript's) does."""
    def no_constants(name):
        raise AssertionError(f"{name} in JSON output")
    return json.loads(text, parse_constant=no_constants)


def test_errors_share_one_type():
    for error in (OptionsError, InputError, ConvertError, WeightsError):
        assert issubclass(error, GlassboxError) and issubclass(error, ValueError)
    from glassbox import convert, model
    assert weights.WeightsError is WeightsError and model.InputError is InputError and convert.ConvertError is ConvertError


# ----- 1. command-line options ---------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["predict", "default", "hi", "--rows", "0"], "--rows"),
    (["predict", "default", "hi", "--rows", "-3"], "--rows"),
    (["predict", "default", "hi", "--rows", "many"], "--rows"),
    (["predict", "default", "hi", "--temperature", "-1"], "--temperature"),
    (["predict", "default", "hi", "--temperature", "nan"], "--temperature"),
    (["predict", "default", "hi", "--temperature", "inf"], "--temperature"),
    (["predict", "default", "hi", "--temperature", "1e30"], "--temperature"),
    (["predict", "default", "hi", "--top-k", "-1"], "--top-k"),
    (["predict", "default", "hi", "--top-k", "2.5"], "--top-k"),
    (["predict", "default", "hi", "--top-p", "0"], "--top-p"),
    (["predict", "default", "hi", "--top-p", "1.5"], "--top-p"),
    (["predict", "default", "hi", "--top-p", "nan"], "--top-p"),
    (["generate", "default", "hi", "-n", "0"], "-n"),
    (["generate", "default", "hi", "-n", "-2"], "-n"),
    (["generate", "default", "hi", "--seed", "-1"], "--seed"),
    (["generate", "default", "hi", "--temperature", "-0.5"], "--temperature"),
    (["convert", "gpt2", "out", "--group", "0"], "--group"),
    (["convert", "gpt2", "out", "--quant", "q3"], "--quant"),
    (["trace", "default", "hi", "--out", "/no/such/folder/t.safetensors"], "--out"),
    (["predict", "default", "hi", "--backend", "tpu"], "--backend"),
    (["predict", "default", "", "--backend", "numpy"], "text is empty"),
])
def test_bad_options_one_line(argv, needle, capsys):
    refused(argv, capsys, needle)


def test_options_are_checked_before_any_work(capsys, tmp_path):
    # A folder that does not exist would be the next error: the option is named first.
    refused(["predict", str(tmp_path / "missing"), "hi", "--rows", "0"], capsys, "--rows")


def test_help_states_the_greedy_threshold(capsys):
    assert main(["predict", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"below {GREEDY_BELOW:g}" in out and "greedy" in out


@pytest.mark.parametrize("extra", [
    ["--temperature", "0"], ["--temperature", "1e-30"], ["--temperature", "5e-324"],
    ["--temperature", f"{GREEDY_BELOW}"], ["--temperature", "10000"], ["--temperature", "0.7", "--top-k", "1"],
    ["--top-p", "1e-9"], ["--top-k", "60000"], ["--rows", "100000"],
])
def test_json_is_strict_and_finite(extra, capsys):
    assert main(["predict", MINI, "The cat sat", "--json", "--backend", "numpy", *extra]) == 0
    out = strict_json(capsys.readouterr().out)
    rows = out["predictions"]
    assert rows and all(math.isfinite(r["logit"]) and 0 <= r["probability"] <= 1 for r in rows)
    assert sum(r["probability"] for r in rows) <= 1 + 1e-5


def test_tiny_temperatures_are_greedy_exactly():
    logits = np.array([1.0, 3e30, -2.0, 3e30], dtype=np.float32)  # /1e-9 would overflow float32
    for t in (0, 1e-30, 5e-324, GREEDY_BELOW / 2):
        d = distribution(logits, t)
        assert d.greedy and d.probs.tolist() == [0, 1, 0, 0]
    d = distribution(np.array([1.0, 2.0], np.float32), GREEDY_BELOW)
    assert not d.greedy and np.isfinite(d.probs).all() and d.probs.tolist() == [0, 1]


def test_non_finite_logits_are_refused():
    with pytest.raises(OptionsError, match="non-finite"):
        distribution(np.array([0.0, np.nan], np.float32))


def test_generate_json_free_paths_are_finite(capsys):
    assert main(["generate", MINI, "Once", "-n", "3", "--seed", "0", "--temperature", "1e-40", "--backend", "numpy"]) == 0
    greedy = capsys.readouterr().out
    assert main(["generate", MINI, "Once", "-n", "3", "--seed", "5", "--temperature", "0", "--backend", "numpy"]) == 0
    assert capsys.readouterr().out == greedy


def test_trace_output_is_finite(tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    assert main(["trace", MINI, "The cat sat on the mat", "--out", str(out), "--backend", "numpy"]) == 0
    tensors, meta = safetensors.load_with_metadata(out.read_bytes())
    assert all(np.isfinite(t).all() for t in tensors.values())  # masked scores are -1e30, not -inf
    strict_json(meta["config"])


def test_tokenize_json_is_strict(capsys):
    assert main(["tokenize", MINI, "naïve \x00 café", "--json"]) == 0
    assert strict_json(capsys.readouterr().out)["ids"]


# ----- 2. converter input ----------------------------------------------------------------------

HF_CONFIG = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 8, "vocab_size": 40,
             "n_inner": 24, "activation_function": "gelu_new"}


def hf_state(config: dict) -> dict[str, np.ndarray]:
    """A Hugging Face-layout state dict (Conv1D weights [in, out]) for ``config``."""
    cfg = GPTConfig(**{k: config[k] for k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "n_inner")})
    state = {}
    for name, value in weights.random_params(cfg, seed=2).items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            value = np.ascontiguousarray(value.T)
        state["transformer." + name] = value
    return state


def hf_folder(tmp_path, config=HF_CONFIG, state=None, config_text=None):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "config.json").write_text(config_text if config_text is not None else json.dumps(config))
    (src / "model.safetensors").write_bytes(safetensors.save(hf_state(HF_CONFIG) if state is None else state))
    return src


def convert_refused(tmp_path, capsys, src, *needles, extra=()):
    return refused(["--vocab-dir", DEFAULT_VOCAB, "convert", str(src), str(tmp_path / "out"), *extra], capsys, *needles)


def test_converter_accepts_the_good_folder(tmp_path, capsys):
    src = hf_folder(tmp_path)
    assert main(["--vocab-dir", DEFAULT_VOCAB, "convert", str(src), str(tmp_path / "out"), "--quant", "q4", "--group", "8"]) == 0
    assert weights.load_folder(str(tmp_path / "out")).group == 8


@pytest.mark.parametrize("group", ["3", "12", "32", "-8"])  # 24 and 16 are the row lengths
def test_converter_refuses_group_sizes(tmp_path, capsys, group):
    convert_refused(tmp_path, capsys, hf_folder(tmp_path), "--group", extra=("--quant", "q4", "--group", group))


@pytest.mark.parametrize("text, needles", [
    ("[1, 2]", ("config.json", "JSON object")),
    ("not json", ("config.json", "not valid JSON")),
    (json.dumps({k: v for k, v in HF_CONFIG.items() if k != "n_head"}), ("config.json", "n_head", "missing")),
    (json.dumps({k: v for k, v in HF_CONFIG.items() if k != "vocab_size"}), ("config.json", "vocab_size")),
    (json.dumps({**HF_CONFIG, "n_embd": "16"}), ("config.json", "n_embd")),
    (json.dumps({**HF_CONFIG, "n_layer": 0}), ("config.json", "n_layer")),
    (json.dumps({**HF_CONFIG, "n_embd": 15}), ("config.json", "n_embd", "divisible")),
    (json.dumps({**HF_CONFIG, "layer_norm_epsilon": -1}), ("config.json", "layer_norm_epsilon")),
    (json.dumps({**HF_CONFIG, "model_type": "llama"}), ("model_type",)),
])
def test_converter_refuses_configs(tmp_path, capsys, text, needles):
    convert_refused(tmp_path, capsys, hf_folder(tmp_path, config_text=text), *needles)


@pytest.mark.parametrize("src", ["/no/such/folder", "./missing", "afile"])
def test_converter_refuses_sources_that_are_not_folders(tmp_path, capsys, monkeypatch, src):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    convert_refused(tmp_path, capsys, src, "not a checkpoint folder")


@pytest.mark.parametrize("argv, stdin", [(["tokenize", MINI, "a\udcffb"], None), (["tokenize", MINI], b"a\xffb"),
                                         (["predict", MINI, "a\udcffb", "--backend", "numpy"], None)])
def test_text_that_is_not_utf8(monkeypatch, capsys, argv, stdin):
    import io
    import sys
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    refused(argv, capsys, "not", "UTF-8", "0xff")


@pytest.mark.parametrize("change, needles", [
    (lambda s: s.update({"transformer.h.7.mlp.c_fc.weight": np.zeros((16, 24), np.float32)}), ("h.7.mlp.c_fc.weight", "model.safetensors", "not a GPT-2 parameter")),
    (lambda s: s.update({"transformer.rotary.inv_freq": np.zeros(4, np.float32)}), ("rotary.inv_freq",)),
    (lambda s: s.update({"transformer.wte.weight": np.zeros((40, 8), np.float32)}), ("wte.weight", "shape")),
    (lambda s: s.update({"transformer.h.0.attn.c_attn.weight": np.zeros((48, 16), np.float32)}), ("c_attn.weight", "shape")),
    (lambda s: s.update({"transformer.h.0.ln_1.bias": np.zeros(16, np.int32)}), ("ln_1.bias", "int32")),
    (lambda s: s.pop("transformer.ln_f.weight"), ("lacks", "ln_f.weight")),
    (lambda s: s["transformer.h.0.mlp.c_proj.bias"].__setitem__(3, np.nan), ("h.0.mlp.c_proj.bias", "NaN")),
    (lambda s: s["transformer.wpe.weight"].__setitem__((1, 2), np.inf), ("wpe.weight", "infinite")),
])
def test_converter_refuses_tensors(tmp_path, capsys, change, needles):
    state = hf_state(HF_CONFIG)
    change(state)
    convert_refused(tmp_path, capsys, hf_folder(tmp_path, state=state), *needles)


# ----- 3. model folders ------------------------------------------------------------------------

SMALL = GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=50257, n_inner=32)


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    """A small int8 model folder with GPT-2's vocabulary (by reference, like weights/mini)."""
    tokenizer = json.loads(open(os.path.join(MINI, "manifest.json")).read())["tokenizer"]
    folder = tmp_path_factory.mktemp("models") / "small"
    weights.write_folder(str(folder), SMALL, weights.random_params(SMALL, seed=4), "int8", tokenizer)
    return folder


@pytest.fixture
def folder(good_folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(good_folder, copy)
    return copy


def edit_manifest(folder, fn):
    manifest = json.loads((folder / "manifest.json").read_text())
    fn(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def rewrite_shard(folder, fn):
    """Change the shard's tensors with ``fn`` and record the new size and sha256 in the
    manifest, so only the tensor checks can catch the change."""
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["shards"][0]
    path = folder / entry["file"]
    tensors = safetensors.load(path.read_bytes())
    fn(tensors)
    data = safetensors.save(tensors, {"format": "pt"})
    path.write_bytes(data)
    entry["bytes"], entry["sha256"] = len(data), weights.sha256_hex(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return entry["file"]


def test_the_good_folder_runs(folder, capsys):
    assert main(["predict", str(folder), "hi", "--backend", "numpy", "--json"]) == 0
    strict_json(capsys.readouterr().out)


def _set(path, value):
    def fn(m):
        *head, last = path
        for key in head:
            m = m[key]
        if value is KeyError:
            del m[last]
        else:
            m[last] = value
    return fn


@pytest.mark.parametrize("path, value, needles", [
    (("tokenizer",), [], ("tokenizer", "object")),
    (("tokenizer",), KeyError, ("tokenizer", "present")),
    (("tokenizer", "vocab.bpe"), KeyError, ("tokenizer.vocab.bpe",)),
    (("tokenizer", "encoder.json", "sha256"), "abc", ("tokenizer.encoder.json.sha256",)),
    (("split",), [], ("split", "object")),
    (("split",), {"wte.weight": ["wte.weight#0"]}, ("split",)),  # pieces that no shard holds
    (("split",), {"h.9.ln_1.weight": ["a"]}, ("h.9.ln_1.weight",)),
    (("shards",), {}, ("shards", "list")),
    (("shards",), [], ("shards", "non-empty")),
    (("shards", 0, "file"), "../../etc/passwd", ("shards[0].file",)),
    (("shards", 0, "file"), ".hidden.safetensors", ("shards[0].file",)),
    (("shards", 0, "bytes"), "7", ("shards[0].bytes",)),
    (("shards", 0, "bytes"), True, ("shards[0].bytes",)),
    (("shards", 0, "sha256"), None, ("shards[0].sha256",)),
    (("config",), "gpt2", ("config", "object")),
    (("config", "n_layer"), 1.5, ("config.n_layer",)),
    (("config", "n_head"), 3, ("config.n_embd", "divisible")),
    (("config", "vocab_size"), KeyError, ("config.vocab_size",)),
    (("config", "layer_norm_epsilon"), "1e-5", ("config.layer_norm_epsilon",)),
    (("quantization",), None, ("quantization", "object")),
    (("quantization", "scheme"), "int4", ("quantization.scheme",)),
    (("format_version",), "1", ("format version",)),
    (("format",), "other", ("format",)),
    (("source",), "x", ("source", "object")),
])
def test_manifest_schema(folder, capsys, path, value, needles):
    edit_manifest(folder, _set(path, value))
    refused(["predict", str(folder), "hi", "--backend", "numpy"], capsys, "manifest.json", *needles)


def test_manifest_is_checked_before_any_shard_is_read(folder, capsys):
    (folder / json.loads((folder / "manifest.json").read_text())["shards"][0]["file"]).unlink()
    edit_manifest(folder, _set(("quantization", "scheme"), "int4"))
    refused(["predict", str(folder), "hi", "--backend", "numpy"], capsys, "quantization.scheme")


def test_q4_group_size_is_checked(good_folder, tmp_path, capsys):
    q4 = tmp_path / "q4"
    tokenizer = json.loads((good_folder / "manifest.json").read_text())["tokenizer"]
    weights.write_folder(str(q4), SMALL, weights.random_params(SMALL, seed=4), "q4", tokenizer, group=16)
    for bad in (0, 12, 24, 64, "16"):
        edit_manifest(q4, _set(("quantization", "group_size"), bad))
        refused(["predict", str(q4), "hi", "--backend", "numpy"], capsys, "quantization.group_size")


@pytest.mark.parametrize("change, needles", [
    # An int8 matrix stored with another dtype: refused although its sha256 matches the manifest.
    (lambda t: t.update({"h.0.mlp.c_fc.weight": t["h.0.mlp.c_fc.weight"].astype(np.int16)}), ("h.0.mlp.c_fc.weight", "int16", "int8")),
    (lambda t: t.update({"wte.weight": t["wte.weight"].astype(np.float32)}), ("wte.weight", "float32", "int8")),
    (lambda t: t.update({"h.0.attn.c_proj.weight.scale": t["h.0.attn.c_proj.weight.scale"].astype(np.float64)}), ("c_proj.weight.scale", "float64")),
    (lambda t: t.update({"ln_f.bias": t["ln_f.bias"].astype(np.float16)}), ("ln_f.bias", "float16")),
    (lambda t: t.update({"h.0.ln_2.weight": t["h.0.ln_2.weight"][:8]}), ("h.0.ln_2.weight", "shape")),
    (lambda t: t.update({"h.0.attn.c_attn.weight.scale": t["h.0.attn.c_attn.weight.scale"][:-1]}), ("c_attn.weight.scale", "shape")),
    (lambda t: t.update({"extra.weight": np.zeros(3, np.float32)}), ("extra.weight", "does not have")),
    (lambda t: t.pop("h.0.ln_1.bias"), ("no shard holds", "h.0.ln_1.bias")),
])
def test_stored_tensors_dtype_and_shape(folder, capsys, change, needles):
    shard = rewrite_shard(folder, change)
    line = refused(["predict", str(folder), "hi", "--backend", "numpy"], capsys, *needles)
    assert shard in line or "no shard holds" in line


@pytest.mark.parametrize("name, index, value", [
    ("h.0.attn.c_attn.bias", 5, np.nan),
    ("ln_f.weight", 0, np.inf),
    ("h.0.mlp.c_fc.weight.scale", 7, -np.inf),
    ("h.0.ln_1.bias", 15, np.nan),
])
def test_non_finite_weights_are_refused_by_name(folder, capsys, name, index, value):
    def poison(t):
        t[name] = t[name].copy()
        t[name].reshape(-1)[index] = value
    shard = rewrite_shard(folder, poison)
    refused(["predict", str(folder), "hi", "--backend", "numpy"], capsys, name, shard, "NaN or infinite")


def test_non_finite_float32_matrix_refused(good_folder, tmp_path, capsys):
    none = tmp_path / "none"
    tokenizer = json.loads((good_folder / "manifest.json").read_text())["tokenizer"]
    weights.write_folder(str(none), SMALL, weights.random_params(SMALL, seed=4), "none", tokenizer)

    def poison(t):
        t["wpe.weight"] = t["wpe.weight"].copy()
        t["wpe.weight"][3, 3] = np.nan
    shard = rewrite_shard(none, poison)
    refused(["predict", str(none), "hi", "--backend", "numpy"], capsys, "wpe.weight", shard, "NaN")


def test_shard_that_is_not_a_file(folder, capsys):
    manifest = json.loads((folder / "manifest.json").read_text())
    shard = folder / manifest["shards"][0]["file"]
    shard.unlink()
    shard.mkdir()
    refused(["predict", str(folder), "hi", "--backend", "numpy"], capsys, "missing")


# ----- 4. GPU on the command line, simulated (the real adapter: tests/gpu/test_cli_backend.py) --

def _no_wgpu(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "wgpu", None)  # `import wgpu` raises ImportError
    return "wgpu-py is not installed"


def _no_adapter(monkeypatch):
    wgpu = pytest.importorskip("wgpu")

    async def none(**options):
        return None
    monkeypatch.setattr(wgpu.gpu, "request_adapter_async", none)
    return "no WebGPU adapter"


@pytest.mark.parametrize("simulate", [_no_wgpu, _no_adapter])
@pytest.mark.parametrize("command", [["predict", MINI, "hi", "--json"], ["generate", MINI, "hi", "-n", "2", "--seed", "0"]])
def test_auto_falls_back_to_numpy_with_one_line(monkeypatch, capsys, simulate, command):
    reason = simulate(monkeypatch)
    assert main([*command, "--backend", "auto"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith("note: numpy runs the model") and reason in lines[0], captured.err
    assert "Traceback" not in captured.err and len(lines) == (1 if command[0] == "predict" else 2)  # + "[numpy]"
    if command[0] == "predict":
        assert strict_json(captured.out)["backend"] == "numpy"


@pytest.mark.parametrize("simulate", [_no_wgpu, _no_adapter])
def test_gpu_exits_2_with_the_reason(monkeypatch, capsys, simulate):
    reason = simulate(monkeypatch)
    refused(["predict", MINI, "hi", "--backend", "gpu"], capsys, "--backend gpu cannot run here", reason)


# ----- 6. the page's sampling inputs (CPython; the page itself: tests/e2e/test_inputs.py) -------

V = 50257


@pytest.mark.parametrize("field, raw, value, message", [
    ("top-k", "40", 40, ""), ("top-k", " 0 ", 0, ""), ("top-k", "40.0", 40, ""), (f"top-k", str(V), V, ""),
    ("top-k", "-5", 0, "set to 0"), ("top-k", "99999999", V, f"set to {V}"), ("top-k", "1e9", V, f"set to {V}"),
    ("top-k", "2.5", None, "whole number"), ("top-k", "abc", None, "whole number"), ("top-k", "", None, "whole number"),
    ("top-k", "nan", None, "whole number"), ("top-k", "inf", None, "whole number"), ("top-k", "-inf", None, "whole number"),
    ("temperature", "0.8", 0.8, ""), ("temperature", "0", 0.0, ""), ("temperature", "3", 3.0, ""),
    ("temperature", "-1", 0.0, "set to 0"), ("temperature", "7", 3.0, "set to 3"), ("temperature", "x", None, "from 0 to 3"),
    ("temperature", "NaN", None, "from 0 to 3"),
    ("top-p", "0.95", 0.95, ""), ("top-p", "1", 1.0, ""), ("top-p", "0", 0.01, "set to 0.01"), ("top-p", "2", 1.0, "set to 1"),
    ("top-p", "", None, "from 0.01 to 1"), ("top-p", "1e400", None, "from 0.01 to 1"),
])
def test_parse_sampling(field, raw, value, message):
    from app.views.controls import parse_sampling

    got, said = parse_sampling(field, raw, V)
    assert got == value and type(got) is type(value)
    assert (message in said) if message else said == ""
    if got is not None:  # whatever is used is accepted by the sampler the CLI uses too
        from glassbox.sampling import check_options
        check_options(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, field.replace("-", "_"): got})


class _RecordingUI:
    """Keeps the last value each UI call wrote: ``ui[method, *selector args] -> value``."""

    def __init__(self):
        self.last = {}

    def __getitem__(self, key):
        return self.last[key]

    def __getattr__(self, method):
        def record(*args):
            if args:
                self.last[(method, *args[:-1])] = args[-1]
        return record


def test_explainer_never_samples_with_a_refused_value():
    import asyncio

    from app.explainer import Explainer
    from glassbox.model import load

    ui = _RecordingUI()
    ex = Explainer(ui, load(MINI, DEFAULT_VOCAB), seed=0, namespace={}, run_code=lambda *a: None)
    ex.mount()
    asyncio.run(ex.start())
    ex.handle("top-k", "40")
    assert ex.sampling.top_k == 40 and ex.dist.top_k == 40 and ui["set_prop", "sampling-message", "hidden"] is True
    runs = ex.runs
    for raw in ("2.5", "", "abc", "nan"):
        ex.handle("top-k", raw)
        assert ex.sampling.top_k == 40 and ex.dist.top_k == 40  # refused: the label's value still rules
        assert ui["set_prop", "sampling-message", "hidden"] is False and "whole number" in ui["set_text", "sampling-message"]
        assert ui["set_attr", "top-k", "aria-invalid"] == "true" and ui["set_text", "top-k-out"] == "40"
    ex.handle("top-k", "-3")
    assert ex.sampling.top_k == 0 and ui["set_value", "top-k"] == "0" and ui["set_text", "top-k-out"] == "off"
    ex.handle("temperature", "9")
    assert ex.sampling.temperature == 3.0 and ui["set_value", "temperature"] == "3.0" and "set to 3" in ui["set_text", "sampling-message"]
    ex.handle("top-p", "0.5")
    assert ex.sampling.top_p == 0.5 and ui["set_prop", "sampling-message", "hidden"] is True
    assert ex.runs == runs  # re-sampling never runs the model
