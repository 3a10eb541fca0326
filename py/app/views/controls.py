"""The explainer's frame: the input card, the layer/head bar, the sampling controls, the
empty slots the other views fill, and the sequence view (tokens, count, accept/discard).

The frame is written once; controls in it keep their focus and values while the views
around them are redrawn. Every control has a visible label or an aria-label.
"""

from __future__ import annotations

import math
from html import escape

from glassbox.config import GPTConfig

from .common import char_groups, exact, fmt, group_chips, token_label

EXAMPLES = (
    "The quick brown fox jumps over the lazy",
    "Once upon a time, there was a little",
    "The capital of France is",
    "Data visualization empowers users to",
    "She opened the door and saw",
    "In the beginning the Universe was created. This has made a lot of people very",
)

# The detailed views, in page order: (slot, heading). Each gets a section, closed until the
# map (or "Every view") opens it; the output's comes after the sampling controls.
SECTIONS = (
    ("embedding", "Embedding: tokens to vectors"),
    ("attention", "Attention"),
    ("qk", "Queries and keys of every head"),  # issue 12 (filled by app/qkmap.py)
    ("block", "Layer norm, MLP and residuals"),
    ("factors", "Factors: what a hidden vector is made of"),  # issue 13
    ("output", "Output: the next token"),
    ("experiments", "Experiments on the live model"),  # issue 14
)

# The page elements controllers name (controllers never write selectors; binding.py looks
# names up here). Besides these: "view:NAME" is a detailed view's section, "anchor:NAME"
# the element with data-tour=NAME, "testid:NAME" the one with data-testid=NAME, "first-popover:NAME" the first weight popover whose id
# ends in NAME inside the open views.
ELEMENTS = {
    "explainer": '[data-testid="explainer"]',
    "prompt": "#prompt",
    "run-status": '[data-testid="run-status"]',
    "run-progress": '[data-testid="run-progress"]',
    "run-buttons": '#run, #generate, #continuous, #resample, [data-testid="example"]',
    "stop": "#stop",
    "continuous": "#continuous",
    "temperature-out": "#temperature-out",
    "top-k-out": "#top-k-out",
    "top-p-out": "#top-p-out",
    "layer-select": "#layer-select",
    "head-select": "#head-select",
    "derivation": "#derivation",
    "deriv-play": "#deriv-play",
    "stage-count": '[data-testid="stage-count"]',
    "console-output": '[data-testid="console-output"]',
    "console-input": "#console-input",
    "tour": '[data-testid="tour"]',
    "tour-next": "#tour-next",
    "map": '[data-slot="overview"]',
    "mini-map": '[data-testid="mini-map"]',
    "open-all": "#open-all",
    "temperature": "#temperature",
    "top-k": "#top-k",
    "top-p": "#top-p",
    "sampling-message": "#sampling-message",
    "factors-title": "#factors-title",
    "exp-status": '[data-testid="exp-status"]',
    "experiments": '[data-slot="experiments"]',
    "qk-size": "#qk-size",
}


def selector(name: str) -> str:
    """The CSS selector of a page element named by a controller (see ELEMENTS)."""
    kind, _, arg = name.partition(":")
    if arg and kind == "view":
        return f"#view-{arg}"
    if arg and kind == "anchor":
        return f'[data-tour="{arg}"]'
    if arg and kind == "testid":
        return f'[data-testid="{arg}"]'
    if arg and kind == "qk-head":  # "qk-head:L.H", one head's canvas in the query/key map
        layer, _, head = arg.partition(".")
        return f'[data-testid="qk-head"][data-layer="{int(layer)}"][data-head="{int(head)}"]'
    if arg and kind == "first-popover":
        return f'[data-open="true"] .weights-pop[id$="-{arg}"]'
    if name in ELEMENTS:
        return ELEMENTS[name]
    raise ValueError(f"the page has no element named {name!r}")


# issue 9: the sampling controls' ranges, as their <input> min/max say (top-k: 0..V).
SAMPLING_RANGES = {"temperature": (0.0, 3.0), "top-p": (0.01, 1.0)}
SAMPLING_NAMES = {"temperature": "Temperature", "top-k": "Top-k", "top-p": "Top-p"}


def parse_sampling(field: str, raw: str, vocab_size: int) -> tuple[float | int | None, str]:
    """Check one sampling control's raw value before anything samples with it (issue 9).

    Returns ``(value, message)``: ``value`` is what to use (None: refused, keep the current
    setting) and ``message`` says what happened ("" when the input is used as typed). Values
    out of range are clamped to the range the label and the control state; text that is not
    a number, a non-integer top-k, NaN and infinity are refused."""
    if field not in SAMPLING_NAMES:
        raise ValueError(f"unknown sampling control {field!r}")
    name = SAMPLING_NAMES[field]
    low, high = SAMPLING_RANGES.get(field, (0, vocab_size))
    need = (f"{name} needs a whole number from 0 (off) to {vocab_size}" if field == "top-k"
            else f"{name} needs a number from {low:g} to {high:g}")
    text = str(raw).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not text or not math.isfinite(number):
        return None, f"{need}; {text[:20]!r} was not used." if text else f"{need}."
    if field == "top-k":
        if number != int(number):
            return None, f"{need}; {text[:20]} was not used."
        number = int(number)
    if number < low or number > high:
        clamped = type(number)(min(max(number, low), high))
        return clamped, f"{need}: {text[:20]} was set to {clamped:g}."
    return number, ""


def _options(n: int, selected: int) -> str:
    return "".join(
        f'<option value="{i + 1}"{" selected" if i == selected else ""}>{i + 1}</option>' for i in range(n)
    )


def frame(config: GPTConfig, examples=EXAMPLES, text: str = "", temperature: float = 0.8,
          top_k: int = 0, top_p: float = 0.95) -> str:
    """The whole explainer's static HTML (written once per model): the input card, the
    sticky bar with the mini map, the model map's slot, the detailed views (closed until
    the map opens one), the sampling controls and the console."""
    if not examples:
        raise ValueError("the input card needs at least one example prompt")
    L, H, V = config.n_layer, config.n_head, config.vocab_size
    example_buttons = "".join(
        f'<button type="button" class="chip" data-action="example" data-index="{i}" '
        f'data-testid="example">{escape(e)}</button>'
        for i, e in enumerate(examples)
    )
    slots = {
        slot: f'<section class="card view" id="view-{slot}" data-tour="{slot}" data-open="false" '
              f'aria-label="{escape(title)}"><div class="view-bar"><button type="button" class="back" '
              f'data-action="close-view" data-view="{slot}" data-testid="close-view">← Back to the map</button></div>'
              f'<div data-slot="{slot}"><h2>{escape(title)}</h2><p class="muted">Run the model to fill this view.</p></div></section>'
        for slot, title in SECTIONS
    }
    return f"""
<div class="explainer" data-testid="explainer">
  <section class="card input-card" id="view-input" data-tour="input" aria-labelledby="input-title">
    <h2 id="input-title" class="visually-hidden">Your text</h2>
    <label class="field-label" for="prompt">Text for the model to continue
      <span class="muted">(Enter runs it; Shift+Enter starts a new line)</span></label>
    <div class="prompt-row">
      <textarea id="prompt" data-testid="prompt" data-action="prompt-edit" rows="2" spellcheck="false"
        autocomplete="off">{escape(text)}</textarea>
      <button type="button" class="primary" id="run" data-action="run" data-testid="run">Run</button>
    </div>
    <div class="examples" role="group" aria-label="Example prompts"><span class="muted">Try:</span> {example_buttons}</div>
    <div class="actions" role="group" aria-label="Generation" data-tour="generate">
      <button type="button" id="generate" data-action="generate" data-testid="generate"><span class="long">Generate one token</span><span class="short">Generate 1</span></button>
      <button type="button" id="continuous" data-action="continuous" data-testid="continuous"
        aria-pressed="false"><span class="long">Generate continuously</span><span class="short">Continuous</span></button>
      <button type="button" id="stop" data-action="stop" data-testid="stop" disabled>Stop</button>
      <button type="button" id="resample" data-action="resample" data-testid="resample"><span class="long">Sample again</span><span class="short">Resample</span></button>
    </div>
    <p class="run-progress" data-testid="run-progress" aria-live="polite"></p>
    <p class="run-status" data-testid="run-status" role="status" aria-live="polite"></p>
    <div data-slot="sequence" data-testid="sequence"></div>
  </section>

  <nav class="navbar card" aria-label="Model map, layer and head" data-tour="nav">
    <div class="mini-map-slot" data-slot="minimap"></div>
    <label>Layer <select id="layer-select" data-testid="layer-select" data-action="layer"
      aria-label="Layer (block) shown in every view">{_options(L, 0)}</select>
      <span class="muted of">of {L}</span></label>
    <label>Head <select id="head-select" data-testid="head-select" data-action="head"
      aria-label="Attention head shown in every view">{_options(H, 0)}</select>
      <span class="muted of">of {H}</span></label>
    <button type="button" data-action="open-part" data-part="qk" data-testid="open-qk"><span class="long">Q/K map</span><span class="short">Q/K</span></button>
    <button type="button" data-action="open-part" data-part="experiments" data-testid="open-experiments"><span class="long">Experiments</span><span class="short">Exp.</span></button>
    <button type="button" id="open-all" data-action="open-all" data-testid="open-all" aria-pressed="false"><span class="long">Every view</span><span class="short">All</span></button>
    <button type="button" id="tour-start" data-action="tour-start" data-testid="tour-start"><span class="long">Guided tour</span><span class="short">Tour</span></button>
    <a class="skip" href="#console-input" data-action="console-focus" data-testid="console-link">Python console</a>
  </nav>

  <section class="card map-card" id="view-overview" data-tour="overview" aria-label="The model map">
    <div data-slot="overview"><p class="muted">The model map appears once the model has run.</p></div>
  </section>

  {"".join(html for slot, html in slots.items() if slot not in ("output", "experiments"))}

  <section class="card sampling" id="view-sampling" data-tour="sampling" aria-labelledby="sampling-title">
    <h2 id="sampling-title">Sampling</h2>
    <p class="muted">Changing these re-samples from the same logits: the model does not run again.</p>
    <div class="sampling-grid">
      <label for="temperature">Temperature <output id="temperature-out" for="temperature">{fmt(temperature, 3)}</output></label>
      <input type="range" id="temperature" data-testid="temperature" data-action="temperature"
        min="0" max="3" step="0.01" value="{exact(temperature)}" aria-describedby="temperature-help">
      <p id="temperature-help" class="muted small">0 = greedy (always the most likely token); higher flattens the distribution.</p>
      <label for="top-k">Top-k <output id="top-k-out" for="top-k">{top_k or "off"}</output></label>
      <input type="number" id="top-k" data-testid="top-k" data-action="top-k" min="0" max="{V}" step="1"
        value="{int(top_k)}" inputmode="numeric" aria-describedby="top-k-help">
      <p id="top-k-help" class="muted small">Keep only the k most likely tokens; 0 turns it off.</p>
      <label for="top-p">Top-p <output id="top-p-out" for="top-p">{fmt(top_p, 3)}</output></label>
      <input type="range" id="top-p" data-testid="top-p" data-action="top-p" min="0.01" max="1" step="0.01"
        value="{exact(top_p)}" aria-describedby="top-p-help">
      <p id="top-p-help" class="muted small">Keep the most likely tokens until their probability reaches p (over all {V} tokens); 1 turns it off.</p>
    </div>
    <p id="sampling-message" class="input-error" role="alert" data-testid="sampling-message" hidden></p>
  </section>

  {slots["output"]}

  {slots["experiments"]}

  <section class="card console-card" id="view-console" data-tour="console" aria-labelledby="console-title">
    <h2 id="console-title">Python console</h2>
    <p class="muted">Python runs in this page: <code>trace</code>, <code>tokens</code>, <code>ids</code>,
      <code>model</code>, <code>dist</code> and <code>np</code> are ready to use, e.g.
      <code>trace.keys()</code> or <code>trace["h.0.att"][0].sum(axis=-1)</code>; <code>help()</code> lists them.
      Ctrl+Enter runs.</p>
    <label class="visually-hidden" for="console-input">Python code</label>
    <textarea id="console-input" data-testid="console-input" rows="3" spellcheck="false"
      autocomplete="off">trace["h.0.att"].shape, tokens[:3]</textarea>
    <div class="actions"><button type="button" id="console-run" data-action="console-run"
      data-testid="console-run">Run Python</button>
      <button type="button" id="console-clear" data-action="console-clear">Clear</button></div>
    <pre class="console-output" data-testid="console-output" data-slot="console-output" tabindex="0"
      role="log" aria-label="Console output" aria-live="polite"></pre>
  </section>

  <div data-slot="tour"></div>
  <div class="tooltip" id="tooltip" data-testid="tooltip" role="tooltip" hidden></div>
  <div class="cell-cursor" id="cell-cursor" aria-hidden="true" hidden></div>
  <p class="visually-hidden" id="live" data-testid="live" aria-live="polite"></p>
</div>
"""


def sequence(tokens: list[str], ids, context: int, *, dropped: int = 0, pending: bool = False,
             pending_prob: float | None = None, candidate: tuple[int, str, float] | None = None,
             error: str = "", generating: bool = False, token_bytes=None) -> str:
    """The tokens being explained, the count against the context, the pending token's buttons.
    With ``token_bytes`` (one ``bytes`` per token), tokens that split one character between
    them are grouped under that character (views/common.char_groups)."""
    ids = [int(i) for i in ids]
    if len(tokens) != len(ids):
        raise ValueError(f"{len(tokens)} token labels for {len(ids)} ids")
    parts = []
    if error:
        parts.append(f'<p class="input-error" role="alert" data-testid="input-error">{escape(error)}</p>')
    n = len(ids)
    full = n >= context
    count = (f'<p class="token-count" data-testid="token-count">{n} / {context} tokens'
             + (" — the context is full" if full else "")
             + (f' · {dropped} earlier tokens were cut to fit the context' if dropped else "") + "</p>")
    parts.append(count)
    chips = []
    for i, (label, tid) in enumerate(zip(tokens, ids)):
        new = pending and i == n - 1
        chips.append(
            f'<li class="token{" token-new" if new else ""}" data-testid="token" data-position="{i}" '
            f'data-token-id="{tid}"><span class="tok-text">{escape(token_label(label))}</span>'
            f'<span class="tok-id">{tid}</span></li>'
        )
    if token_bytes is not None:
        chips = group_chips(chips, char_groups(token_bytes))
    if candidate is not None and not generating:
        cid, clabel, cprob = candidate
        chips.append(
            f'<li class="token token-candidate" data-testid="candidate" data-token-id="{cid}" '
            f'title="the sampled next token (p = {fmt(cprob)}); Generate appends it">'
            f'<span class="tok-text">{escape(token_label(clabel))}</span><span class="tok-id">next?</span></li>'
        )
    parts.append(f'<ol class="tokens" aria-label="Tokens ({n})">{"".join(chips)}</ol>')
    if pending and n:
        prob = f" (it had p = {fmt(pending_prob)})" if pending_prob is not None else ""
        parts.append(
            f'<div class="pending" data-testid="pending" role="group" aria-label="The generated token">'
            f'<span>Added <strong>{escape(token_label(tokens[-1]))}</strong>{prob}.</span> '
            f'<button type="button" id="accept" data-action="accept" data-testid="accept">Keep it</button> '
            f'<button type="button" id="discard" data-action="discard" data-testid="discard">Discard it</button></div>'
        )
    return "".join(parts)
