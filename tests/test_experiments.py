"""Experiments (glassbox/experiments.py) against Hugging Face transformers' GPT2LMHeadModel.

The references are transformers' own forward pass with its hidden states (logit lens), with
forward pre-hooks on each block's ``attn.c_proj`` that change the ablated heads' columns of its
input (transformers 5 has no ``head_mask``), and with forward hooks that overwrite a block's
output rows (patching). Tolerance: the models are float32 on both sides with different
summation orders; over 2-3 blocks of width 64 logits agree to ~1e-5, so 1e-4 absolute on
logits and probabilities leaves a margin of ~10x while catching any wrong head, column or row.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from glassbox import experiments as ex
from glassbox import reference
from glassbox.cli import DEFAULT_VOCAB, ROOT, main
from hf_helpers import glassbox_params, random_hf_model

ATOL = 1e-4
TEXT = "The Eiffel Tower is in"


@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    model = random_hf_model(n_layer=3, n_head=4, n_embd=64, n_positions=32, vocab_size=97, seed=7)
    params, config = glassbox_params(model)
    ids = np.array([5, 17, 3, 88, 42, 9, 61, 23], dtype=np.int64)
    return torch, model, params, config, ids


def _hf_logits(torch, model, ids, hooks=()):
    handles = [module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn)
               for module, fn, pre in hooks]
    try:
        with torch.no_grad():
            out = model(torch.tensor(ids)[None], output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out


def test_logit_lens_matches_hidden_states(hf):
    torch, model, params, config, ids = hf
    trace = reference.forward(params, config, ids)
    lens = ex.logit_lens(params, config, trace, k=config.vocab_size)  # the whole sorted distribution
    hidden = _hf_logits(torch, model, ids).hidden_states
    assert len(hidden) == lens.ids.shape[0] == config.n_layer + 1
    with torch.no_grad():
        for s, h in enumerate(hidden):
            # transformers' last hidden state already went through ln_f; the others did not
            normed = h if s == config.n_layer else model.transformer.ln_f(h)
            probs = torch.softmax(model.lm_head(normed)[0], dim=-1).numpy()
            ours = np.zeros_like(probs)
            np.put_along_axis(ours, lens.ids[s], lens.probs[s], axis=-1)
            np.testing.assert_allclose(ours, probs, atol=ATOL)
    # the last stream is the model's output
    np.testing.assert_array_equal(ex.top_tokens(trace.logits, 5)[0], lens.ids[-1, :, :5])


def _head_hook(torch, config, heads, replace):
    """Pre-hooks on attn.c_proj replacing the columns h*K..(h+1)*K of its input, per layer."""
    K = config.head_size
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer):
        def hook(module, args):
            x = args[0].clone()
            for head in by_layer[layer]:
                x[..., head * K:(head + 1) * K] = replace(layer, head, x[..., head * K:(head + 1) * K])
            return (x,)
        return hook

    return by_layer, make


@pytest.mark.parametrize("heads", [[(0, 1)], [(0, 2), (2, 3)], [(1, 0), (1, 3), (2, 1)]])
def test_zero_ablation_matches_c_proj_prehook(hf, heads):
    torch, model, params, config, ids = hf
    trace = reference.forward(params, config, ids)
    by_layer, make = _head_hook(torch, config, heads, lambda layer, head, cols: torch.zeros_like(cols))
    out = _hf_logits(torch, model, ids, [(model.transformer.h[l].attn.c_proj, make(l), True) for l in by_layer])
    expected = out.logits[0, -1].numpy()
    np.testing.assert_allclose(ex.ablate(params, config, trace, heads), expected, atol=ATOL)
    # and the full ablated forward through reference.forward's edit agrees with the resumed one
    full = reference.forward(params, config, ids, edit=ex.ablation_edit(heads)).logits[-1]
    np.testing.assert_allclose(full, expected, atol=ATOL)
    assert not np.allclose(expected, trace.logits[-1], atol=1e-3), "the ablation must change something"


def test_mean_ablation_uses_the_mean_over_positions(hf):
    torch, model, params, config, ids = hf
    trace = reference.forward(params, config, ids)
    heads = [(0, 3), (2, 0)]
    seen = {}  # the clean run's c_proj inputs, captured by transformers itself

    def capture(layer):
        def hook(module, args):
            seen[layer] = args[0].clone()
        return hook

    _hf_logits(torch, model, ids, [(model.transformer.h[l].attn.c_proj, capture(l), True) for l in (0, 2)])
    K = config.head_size
    by_layer, make = _head_hook(torch, config, heads, lambda layer, head, cols: seen[layer][..., head * K:(head + 1) * K]
                                .mean(dim=1, keepdim=True).expand_as(cols))
    out = _hf_logits(torch, model, ids, [(model.transformer.h[l].attn.c_proj, make(l), True) for l in by_layer])
    np.testing.assert_allclose(ex.ablate(params, config, trace, heads, mean=True), out.logits[0, -1].numpy(), atol=ATOL)


def test_sweep_is_each_head_alone(hf):
    torch, model, params, config, ids = hf
    trace = reference.forward(params, config, ids)
    target = int(np.argmax(trace.logits[-1]))
    kl, dlogp = ex.sweep(params, config, trace, target)
    assert kl.shape == dlogp.shape == (config.n_layer, config.n_head) and (kl >= -1e-9).all()
    before = ex.clean_logits(params, config, trace)
    one = ex.effect(before, ex.ablate(params, config, trace, [(1, 2)]), target)
    assert kl[1, 2] == pytest.approx(one.kl) and dlogp[1, 2] == pytest.approx(one.dlogp)
    steps = list(ex.sweep_steps(params, config, trace, target))  # progress, one re-run per head
    assert steps == [(i, kl.size) for i in range(1, kl.size + 1)]
    lp = ex.log_softmax(before)
    assert ex.effect(before, before, target).kl == pytest.approx(0, abs=1e-12) and one.logp_before == pytest.approx(lp[target])


def test_patching_everything_gives_the_clean_output_exactly(hf):
    torch, model, params, config, ids = hf
    clean = reference.forward(params, config, ids)
    corrupt = reference.forward(params, config, ids[::-1].copy())
    n, S = ids.size, config.n_layer + 1
    want = ex.clean_logits(params, config, clean)
    everything = [(s, p) for s in range(S) for p in range(n)]
    np.testing.assert_array_equal(ex.patch(params, config, clean, corrupt, streams=everything), want)
    for s in range(S):  # any one stream at every position carries the whole clean run
        np.testing.assert_array_equal(ex.patch(params, config, clean, corrupt, streams=[(s, p) for p in range(n)]), want)
    np.testing.assert_allclose(want, clean.logits[-1], atol=1e-5)
    with pytest.raises(ValueError, match="same length"):
        ex.patch(params, config, clean, reference.forward(params, config, ids[:-1]), streams=[(0, 0)])


def test_residual_and_head_patching_match_transformers(hf):
    torch, model, params, config, ids = hf
    clean = reference.forward(params, config, ids)
    corrupt_ids = ids.copy()
    corrupt_ids[2] = 70
    corrupt = reference.forward(params, config, corrupt_ids)
    hidden = _hf_logits(torch, model, ids).hidden_states

    def overwrite(layer, position):  # block `layer`'s output row from the clean run
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            out = out.clone()
            out[:, position] = hidden[layer + 1][:, position]
            return (out, *output[1:]) if isinstance(output, tuple) else out
        return hook

    out = _hf_logits(torch, model, corrupt_ids, [(model.transformer.h[1], overwrite(1, 2), False)])
    np.testing.assert_allclose(ex.patch(params, config, clean, corrupt, streams=[(2, 2)]), out.logits[0, -1].numpy(), atol=ATOL)
    seen = {}
    _hf_logits(torch, model, ids, [(model.transformer.h[1].attn.c_proj, lambda m, a: seen.update(x=a[0].clone()), True)])
    K = config.head_size
    _, make = _head_hook(torch, config, [(1, 2)], lambda layer, head, cols: seen["x"][..., head * K:(head + 1) * K])
    out = _hf_logits(torch, model, corrupt_ids, [(model.transformer.h[1].attn.c_proj, make(1), True)])
    np.testing.assert_allclose(ex.patch(params, config, clean, corrupt, heads=[(1, 2)]), out.logits[0, -1].numpy(), atol=ATOL)
    result = ex.patching(params, config, clean, corrupt, int(np.argmax(clean.logits[-1])))
    rec = result.streams_recovered
    assert rec.shape == (config.n_layer + 1, ids.size)
    np.testing.assert_allclose(rec[:, 2][:1], 1.0, atol=1e-9)  # the changed token's embedding row restores all
    np.testing.assert_allclose(rec[:, :2], 0.0, atol=1e-9)  # rows before the change are equal in both runs


@pytest.mark.parametrize("position", [-1, 0, 4])
def test_direct_logit_attribution_sums_to_the_logit(hf, position):
    torch, model, params, config, ids = hf
    trace = reference.forward(params, config, ids)
    for token in (0, int(np.argmax(trace.logits[position])), 96):
        a = ex.attribution(params, config, trace, token, position)
        assert len(a.names) == 2 + config.n_layer * (config.n_head + 2) + 1
        assert abs(a.total - float(trace.logits[position, token])) < 1e-4
    with pytest.raises(ValueError, match="outside"):
        ex.attribution(params, config, trace, 97)


def test_parse_heads():
    from glassbox.config import GPTConfig

    config = GPTConfig(n_layer=4, n_head=4, n_embd=32, n_positions=16, vocab_size=10)
    assert ex.parse_heads("3.2, 0.1,0.1", config) == [(0, 1), (3, 2)]
    for bad, msg in (("1-2", "LAYER.HEAD"), ("4.0", "does not exist"), ("0.4", "does not exist"), ("", "LAYER.HEAD"),
                     ("a.b", "LAYER.HEAD"), ("-1.0", "LAYER.HEAD")):
        with pytest.raises(ValueError, match=msg):
            ex.parse_heads(bad, config)


def test_csv_table():
    assert ex.csv_table(["a", "b"], [[1.5, 'x,"y"'], [float("nan"), " t"]]) == 'a,b\r\n1.5,"x,""y"""\r\n," t"\r\n'


# ----- the command line on the committed default model -------------------------------------------
MINI = os.path.join(ROOT, "weights", "mini")


@pytest.fixture(scope="module")
def mini():
    if not os.path.exists(os.path.join(DEFAULT_VOCAB, "encoder.json")):
        pytest.fail(f"GPT-2 vocabulary missing at {DEFAULT_VOCAB}: run `python3 tools/vendor.py`")
    from glassbox.model import load

    model = load(MINI, DEFAULT_VOCAB)
    return model, model.forward(model.prompt(TEXT).ids)


def _json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_lens_and_ablate_json(mini, capsys):
    model, trace = mini
    out = _json(capsys, "lens", MINI, TEXT, "--json", "--top-k", "3", "--position", "2")
    lens = ex.logit_lens(model.params, model.config, trace, 3)
    assert [row["layer"] for row in out["layers"]] == list(range(model.config.n_layer + 1))
    assert [[t["id"] for t in row["top"]] for row in out["layers"]] == lens.ids[:, 2].tolist()
    np.testing.assert_allclose([[t["prob"] for t in row["top"]] for row in out["layers"]], lens.probs[:, 2], rtol=1e-12)
    last = _json(capsys, "lens", MINI, TEXT, "--json")["layers"][-1]["top"]
    assert [t["id"] for t in last] == np.argsort(-trace.logits[-1], kind="stable")[:5].tolist()

    out = _json(capsys, "ablate", MINI, TEXT, "--heads", "3.2,1.0", "--json", "--top-k", "4")
    after = ex.ablate(model.params, model.config, trace, [(1, 0), (3, 2)])
    ids, probs = ex.top_tokens(after, 4)
    assert [r["id"] for r in out["rows"]] == ids.tolist() and out["heads"] == [[1, 0], [3, 2]]
    np.testing.assert_allclose([r["prob"] for r in out["rows"]], probs, rtol=1e-12)
    assert out["kl"] > 0
    sweep = _json(capsys, "ablate", MINI, TEXT, "--sweep", "--mean", "--json")["sweep"]
    assert np.array(sweep["kl"]).shape == (model.config.n_layer, model.config.n_head)


def test_cli_patch_and_attribute_json(mini, capsys):
    model, trace = mini
    out = _json(capsys, "attribute", MINI, TEXT, "--json")
    assert out["token"] == int(np.argmax(trace.logits[-1])) and abs(out["sum"] - out["logit"]) < 1e-4
    out = _json(capsys, "patch", MINI, TEXT, "The Colosseum is in", "--json")
    assert np.array(out["streams"]["logp"]).shape == (model.config.n_layer + 1, trace.ids.size)
    assert out["streams"]["recovered"][-1][-1] == pytest.approx(1.0)


@pytest.mark.parametrize("argv, message", [
    (["ablate", MINI, TEXT, "--heads", "1-2"], "bad head '1-2'"),
    (["ablate", MINI, TEXT, "--heads", "9.0"], "head 9.0 does not exist"),
    (["ablate", MINI, TEXT], "say which heads"),
    (["lens", MINI, TEXT, "--position", "99"], "--position 99 is out of range"),
    (["attribute", MINI, TEXT, "--token", "50257"], "--token 50257 is out of range"),
    (["patch", MINI, TEXT, "The cat"], "same length"),
])
def test_cli_experiment_errors(mini, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
