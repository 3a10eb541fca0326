"""The explainer's frame: the input card, the layer/head bar, the sampling controls, the
empty slots the other views fill, and the sequence view (tokens, count, accept/discard).

The frame is written once; controls in it keep their focus and values while the views
around them are redrawn. Every control has a visible label or an aria-label.
"""

from __future__ import annotations

from html import escape

from glassbox.config import GPTConfig

from .common import exact, fmt, token_label

EXAMPLES = (
    "The quick brown fox jumps over the lazy",
    "Once upon a time, there was a little",
    "The capital of France is",
    "Data visualization empowers users to",
    "She opened the door and saw",
    "In the beginning the Universe was created. This has made a lot of people very",
)

# Sections in page order: (slot, heading, tour anchor).
SECTIONS = (
    ("overview", "Overview: from tokens to probabilities"),
    ("embedding", "Embedding: tokens to vectors"),
    ("attention", "Attention"),
    ("qk", "Queries and keys of every head"),  # issue 12 (filled by app/qkmap.py)
    ("block", "Layer norm, MLP and residuals"),
    ("output", "Output: the next token"),
)


def _options(n: int, selected: int) -> str:
    return "".join(
        f'<option value="{i + 1}"{" selected" if i == selected else ""}>{i + 1}</option>' for i in range(n)
    )


def frame(config: GPTConfig, examples=EXAMPLES, text: str = "", temperature: float = 0.8,
          top_k: int = 0, top_p: float = 0.95) -> str:
    """The whole explainer's static HTML (written once per model)."""
    if not examples:
        raise ValueError("the input card needs at least one example prompt")
    L, H, V = config.n_layer, config.n_head, config.vocab_size
    example_buttons = "".join(
        f'<button type="button" class="chip" data-action="example" data-index="{i}" '
        f'data-testid="example">{escape(e)}</button>'
        for i, e in enumerate(examples)
    )
    slots = [
        f'<section class="card view" id="view-{slot}" data-slot="{slot}" data-tour="{slot}" '
        f'aria-label="{escape(title)}"><h2>{escape(title)}</h2><p class="muted">Run the model to fill this view.</p></section>'
        for slot, title in SECTIONS
    ]
    sections_before, output_slot = "".join(slots[:-1]), slots[-1]
    return f"""
<div class="explainer" data-testid="explainer">
  <section class="card input-card" id="view-input" data-tour="input" aria-labelledby="input-title">
    <h2 id="input-title">Your text</h2>
    <label class="field-label" for="prompt">Text for the model to continue
      <span class="muted">(Enter runs it; Shift+Enter starts a new line)</span></label>
    <div class="prompt-row">
      <textarea id="prompt" data-testid="prompt" rows="2" spellcheck="false"
        autocomplete="off">{escape(text)}</textarea>
      <button type="button" class="primary" id="run" data-action="run" data-testid="run">Run</button>
    </div>
    <div class="examples" role="group" aria-label="Example prompts"><span class="muted">Try:</span> {example_buttons}</div>
    <div class="actions" role="group" aria-label="Generation" data-tour="generate">
      <button type="button" id="generate" data-action="generate" data-testid="generate">Generate one token</button>
      <button type="button" id="continuous" data-action="continuous" data-testid="continuous"
        aria-pressed="false">Generate continuously</button>
      <button type="button" id="stop" data-action="stop" data-testid="stop" disabled>Stop</button>
      <button type="button" id="resample" data-action="resample" data-testid="resample">Sample again</button>
    </div>
    <p class="run-status" data-testid="run-status" role="status" aria-live="polite"></p>
    <div data-slot="sequence" data-testid="sequence"></div>
  </section>

  <nav class="navbar card" aria-label="Layer and head" data-tour="nav">
    <label>Layer <select id="layer-select" data-testid="layer-select" data-action="layer"
      aria-label="Layer (block) shown in every view">{_options(L, 0)}</select>
      <span class="muted of">of {L}</span></label>
    <label>Head <select id="head-select" data-testid="head-select" data-action="head"
      aria-label="Attention head shown in every view">{_options(H, 0)}</select>
      <span class="muted of">of {H}</span></label>
    <button type="button" id="tour-start" data-action="tour-start" data-testid="tour-start"><span class="long">Guided tour</span><span class="short">Tour</span></button>
    <a class="skip" href="#view-console">Python console</a>
  </nav>

  {sections_before}

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
  </section>

  {output_slot}

  <section class="card console-card" id="view-console" data-tour="console" aria-labelledby="console-title">
    <h2 id="console-title">Python console</h2>
    <p class="muted">Python runs in this page: <code>trace</code>, <code>tokens</code>, <code>ids</code>,
      <code>model</code>, <code>dist</code> and <code>np</code> are ready to use, e.g.
      <code>trace["h.0.att"][0].sum(axis=-1)</code>. Ctrl+Enter runs.</p>
    <label class="visually-hidden" for="console-input">Python code</label>
    <textarea id="console-input" data-testid="console-input" rows="3" spellcheck="false"
      autocomplete="off">trace["h.0.att"].shape, tokens[:3]</textarea>
    <div class="actions"><button type="button" id="console-run" data-action="console-run"
      data-testid="console-run">Run Python</button>
      <button type="button" id="console-clear" data-action="console-clear">Clear</button></div>
    <pre class="console-output" data-testid="console-output" data-slot="console-output" tabindex="0"
      aria-label="Console output" aria-live="polite"></pre>
  </section>

  <div data-slot="tour"></div>
  <div class="tooltip" id="tooltip" data-testid="tooltip" role="tooltip" hidden></div>
  <div class="cell-cursor" id="cell-cursor" aria-hidden="true" hidden></div>
  <p class="visually-hidden" id="live" data-testid="live" aria-live="polite"></p>
</div>
"""


def sequence(tokens: list[str], ids, context: int, *, dropped: int = 0, pending: bool = False,
             pending_prob: float | None = None, candidate: tuple[int, str, float] | None = None,
             error: str = "", generating: bool = False) -> str:
    """The tokens being explained, the count against the context, the pending token's buttons."""
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
