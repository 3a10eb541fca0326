"""Issue 10's view pieces under CPython: split-character grouping with GPT-2's real tokenizer,
the attention colour scales, the zoomed window, the lines view, the attention lens's actions,
the sampling view's cut tokens and the weights buttons."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from glassbox.config import GPTConfig
from glassbox.model import Model
from glassbox.sampling import distribution
from glassbox.tokenizer import Tokenizer
from glassbox.weights import Checkpoint, expected_shapes

from app.attention_lens import AttentionLens
from app.views import attention, embedding, output, weights
from app.views.common import char_groups, group_chips

VOCAB = Path(__file__).resolve().parents[1] / "vendor" / "gpt2"
CONFIG = GPTConfig(n_layer=2, n_head=3, n_embd=12, n_positions=80, vocab_size=50257)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    if not (VOCAB / "encoder.json").exists():
        pytest.fail(f"GPT-2's vocabulary is missing from {VOCAB}: run `python3 tools/vendor.py`")
    return Tokenizer.from_folder(VOCAB)


@pytest.fixture(scope="module")
def model(tokenizer) -> Model:
    rng = np.random.default_rng(3)
    params = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32) for name, shape in expected_shapes(CONFIG).items()}
    for name in params:
        if name.endswith(("ln_1.weight", "ln_2.weight")) or name == "ln_f.weight":
            params[name] = np.ones_like(params[name])
    return Model(Checkpoint(config=CONFIG, scheme="none", group=0, tensors=params), tokenizer, "random")


# ----- tokens that split a character ----------------------------------------------------------
def test_char_groups_join_the_tokens_of_one_character(tokenizer):
    ids = tokenizer.encode("I love 😀 and 日本語 ok")
    groups = char_groups([tokenizer.token_bytes(i) for i in ids])
    # GPT-2 cuts the emoji's 4 bytes over 2 tokens and each CJK character's 3 over 2 or 3.
    assert [g.text.strip() for g in groups] == ["😀", "日", "本", "語"]
    for g in groups:
        joined = b"".join(tokenizer.token_bytes(i) for i in ids[g.first:g.last + 1])
        assert joined.decode("utf-8") == g.text  # the group is exactly whole characters
        assert g.last > g.first
        for t in range(g.first, g.last):  # every token but the last leaves a character open
            with pytest.raises(UnicodeDecodeError):
                b"".join(tokenizer.token_bytes(i) for i in ids[g.first:t + 1]).decode("utf-8")
    assert groups[0].bytes_text() == "20 F0 9F 98 | 80"
    # Whole characters, accented or not, are no group; a character cut at the end is one, as U+FFFD.
    assert char_groups([tokenizer.token_bytes(i) for i in tokenizer.encode("naïve café")]) == []
    cut = [tokenizer.token_bytes(i) for i in ids[:3]]
    assert [(g.first, g.last, g.text) for g in char_groups(cut)] == [(2, 2, " \ufffd")] or char_groups(cut) == []
    assert char_groups([]) == []


def test_group_chips_wrap_each_group_and_keep_the_others(tokenizer):
    ids = tokenizer.encode("a 😀 b")
    groups = char_groups([tokenizer.token_bytes(i) for i in ids])
    chips = [f"<li>{i}</li>" for i in range(len(ids))]
    out = group_chips(chips, groups)
    assert len(out) == len(ids) - sum(g.last - g.first for g in groups)
    html = "".join(out)
    assert html.count('data-testid="char-group"') == 1 and "😀" in html and "F0 9F" in html
    assert all(c in html for c in chips)


def test_embedding_view_groups_split_characters(model, tokenizer):
    ids = model.prompt("x 日本 y").ids
    trace = model.forward(ids)
    tokens = tokenizer.display(ids)
    html = embedding.render(trace, tokens, [tokenizer.token_bytes(i) for i in ids]).html
    assert html.count('data-testid="char-group"') == 2
    assert 'data-testid="char-group"' not in embedding.render(trace, tokens).html
    with pytest.raises(ValueError):
        embedding.render(trace, tokens, [b"x"])


# ----- attention: scales, window, lines ---------------------------------------------------------
def test_colour_scales():
    att = np.array([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.001, 0.5, 0.499]], dtype=np.float32)
    np.testing.assert_array_equal(attention.scale_weights(att, "linear"), att)
    row = attention.scale_weights(att, "row")
    np.testing.assert_allclose(row.max(axis=1), 1.0)
    np.testing.assert_allclose(row[1], [1 / 3, 1.0, 0.0], rtol=1e-6)
    log = attention.scale_weights(att, "log")
    np.testing.assert_allclose(log[0, 0], 1.0)
    np.testing.assert_allclose(log[2, 0], 0.25, rtol=1e-5)  # 1e-3 is one quarter up from 1e-4
    assert log[0, 1] == 0.0  # below the floor
    with pytest.raises(ValueError):
        attention.scale_weights(att, "sqrt")


def test_window_follows_a_picked_cell():
    W = attention.WINDOW
    assert attention.window_origin(20, None) == (0, 0)
    assert attention.window_origin(256, None) == (256 - W, 256 - W)
    assert attention.window_origin(256, (-5, 999)) == (0, 256 - W)
    origin = attention.window_origin(256, None)
    assert attention.window_for(256, 250, 240, None) == origin  # already shown: unchanged
    r0, c0 = attention.window_for(256, 40, 3, None)
    assert r0 <= 40 < r0 + W and c0 <= 3 < c0 + W and c0 == 0


def test_long_attention_view_covers_every_position(model):
    ids = model.prompt(" ".join(["one two three four five six seven"] * 12)).ids
    trace = model.forward(ids)
    n = int(ids.size)
    assert n == CONFIG.n_positions
    tokens = model.tokenizer.display(ids)
    view = attention.render(trace, tokens, 1, 2, lens=AttentionLens(scale="log", origin=(10, 4)))
    assert re.search(rf'data-testid="attention-matrix" data-positions="{n}"', view.html)
    heats = {h.key: h for h in view.heats}
    matrix = heats["attn.1.2.matrix"]
    assert matrix.shape == (n, n) and matrix.qk == (0, 0) and matrix.marks
    np.testing.assert_array_equal(matrix.values, trace["h.1.att"][2])
    assert matrix.cell_qk(7, 3) == (7, 3)
    cells = re.findall(r'data-testid="attention-cell" data-q="(\d+)" data-k="(\d+)"', view.html)
    assert len(cells) == attention.WINDOW ** 2
    assert min(int(q) for q, _ in cells) == 10 and min(int(k) for _, k in cells) == 4
    # Lines view: one query's lines (long input), of the selected head only.
    lines = re.search(r'data-testid="bertviz" data-heads="(\d+)" data-query="(\d+)"', view.html)
    assert lines.groups() == ("2", str(n - 1))
    with pytest.raises(ValueError):
        attention.render(trace, tokens, 1, 2, lens=AttentionLens(scale="nope"))


def test_lines_view_draws_the_weights_of_the_visible_heads(model):
    ids = model.prompt("the cat sat on the mat").ids
    trace = model.forward(ids)
    att = trace["h.0.att"]
    n = int(ids.size)
    tokens = model.tokenizer.display(ids)
    html = attention.lines_view(att, tokens, 0, 1, heads=[0, 2], query=None).html
    assert 'data-heads="0,2"' in html and 'data-query="all"' in html
    for h in (0, 2):
        group = re.search(rf'<g class="bv-lines" data-head="{h}"[^>]*>(.*?)</g>', html).group(1)
        opacities = sorted(float(x) for x in re.findall(r'stroke-opacity="([^"]+)"', group))
        want = sorted(float(w) for w in att[h][np.tril_indices(n)] if w >= 0.01)
        np.testing.assert_allclose(opacities, np.minimum(want, 1.0), atol=5e-4)
    one = attention.lines_view(att, tokens, 0, 1, query=3).html
    assert 'data-query="3"' in one and len(re.findall("<line ", one)) <= 4


def test_attention_lens_actions():
    lens = AttentionLens()
    assert lens.handle("attn-scale", "row", {}, 100, 4, 0) == "attention" and lens.scale == "row"
    with pytest.raises(ValueError):
        lens.handle("attn-scale", "cubic", {}, 100, 4, 0)
    assert lens.handle("attn-select", "99,98", {}, 100, 4, 0) is None  # inside the default window
    assert lens.handle("attn-select", "10,2", {}, 100, 4, 0) == "attention-matrix"
    assert lens.origin[0] <= 10 and lens.selected == (10, 2)
    with pytest.raises(ValueError):
        lens.handle("attn-select", "100,2", {}, 100, 4, 0)
    assert lens.handle("bv-head", "", {"head": "2"}, 100, 4, 1) == "bertviz" and lens.heads == {1, 2}
    lens.handle("bv-head", "", {"head": "1"}, 100, 4, 1)
    assert lens.heads == {2} and lens.visible_heads(1) == {2}
    assert lens.visible_heads(3) == {2, 3}  # another head picked: the lines start from it too
    assert AttentionLens().visible_heads(0) is None
    assert lens.handle("bv-token", "", {"index": "7"}, 100, 4, 1) == "bertviz" and lens.query == 7
    lens.handle("bv-token", "", {"index": "-1"}, 100, 4, 1)
    assert lens.query is None


# ----- output and weights -------------------------------------------------------------------
def test_cut_tokens_show_their_probability_before_the_filter(model):
    trace = model.forward(model.prompt("The quick brown fox").ids)
    dist = distribution(trace.logits[-1], 1.0, 3, 1.0)
    vocab = model.tokenizer.display(range(CONFIG.vocab_size))
    html = output.render(dist, int(dist.top(1)[0]), vocab).html
    rows = re.findall(r'<li class="(prediction[^"]*)" data-testid="prediction" data-token-id="(\d+)" '
                      r'data-prob="([^"]+)" data-prob-before="([^"]+)".*?</li>', html)
    assert len(rows) >= 20
    for cls, tid, p, before in rows:
        tid, filtered = int(tid), "filtered" in cls.split()
        assert float(before) == pytest.approx(float(dist.full_probs[tid]), rel=1e-6)
        assert filtered == (not dist.kept[tid]) == (float(p) == 0.0)
    cut = re.findall(r'filtered" data-testid="prediction".*?</li>', html)
    assert cut and all("bar before" in row and "was" in row and ">0%<" not in row for row in cut)


def test_weights_buttons_carry_the_shared_test_id():
    html = weights.button("pop-1-c_fc", "Weights: c_fc", "mlp")
    assert 'data-testid="weights-button"' in html and 'data-testid="weights-pop-1-c_fc"' in html
    assert 'popovertarget="pop-1-c_fc"' in html


def test_the_view_makes_its_head_thumbnails_in_steps_and_keeps_them(model, monkeypatch):
    """issue 16: the heads' thumbnails are made before the view (AttentionController.prepare,
    a turn for the page after each head), then reused by the view and by redraws that keep
    the trace, layer and colour scale; the same pixels as the view making them itself."""
    import asyncio

    from app.explainer import Explainer
    from test_lazy_popovers import UI

    made = []
    real = attention.thumb_heat
    monkeypatch.setattr(attention, "thumb_heat", lambda key, *a: made.append(key) or real(key, *a))
    ui = UI()
    ex = Explainer(ui, model, seed=0, namespace={}, text=" ".join(["one two three four five six seven"] * 12))
    ex.mount()
    asyncio.run(ex.start())
    assert made == [f"attn.0.thumb{h}" for h in range(CONFIG.n_head)]  # once each, not again by the view
    thumbs = lambda view: [h.rgba.tobytes() for h in view.heats if ".thumb" in h.key]  # noqa: E731
    drawn = ui.slots["attention"]
    made.clear()
    eager = attention.render(ex.trace, ex.tokens, 0, 0, lens=ex.attention.lens)
    assert thumbs(drawn) == thumbs(eager) and len(made) == CONFIG.n_head
    made.clear()
    ex.select_head(2)
    assert made == [] and thumbs(ui.slots["attention"]) == thumbs(eager)
    ex.attention.lens.scale = "log"
    ex.attention.render()
    assert len(made) == CONFIG.n_head  # another colour scale: the view makes them again
