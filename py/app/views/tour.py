"""The guided tour: steps that walk through the pipeline, each pointing at a part of the page.

A step names the element it highlights (``target``, a CSS selector) and what must be opened
first (``opens``: "derivation" expands the attention derivation, "details:SELECTOR" opens a
<details>, "popover:ID" shows a weight popover). The explainer performs the openings; the
page scrolls the target into view and outlines it. The card is a manual popover, shown
after anything the step opened, so it stays on top of an open weight popover.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Step:
    target: str
    title: str
    text: str
    opens: tuple[str, ...] = ()


STEPS = (
    Step('[data-tour="input"]', "1. Your text",
         "Type any text (or pick an example) and press Enter. The tokenizer cuts it into tokens; the model runs on "
         "them and every number on this page comes from that run."),
    Step('[data-tour="generate"]', "2. Generate",
         "Generate appends the sampled next token and runs the model again (reusing the keys and values it already "
         "computed). Keep or discard the new token; or generate continuously until you press Stop."),
    Step('[data-tour="nav"]', "3. Pick a layer and a head",
         "Every view follows these two choices: the attention view shows this head, the block view this layer."),
    Step('[data-tour="sankey"]', "4. The whole model at a glance",
         "Each ribbon is one token's vector flowing through the embedding and the blocks; the last token's ribbon "
         "splits into the most likely next tokens. Click a block to select it."),
    Step('[data-tour="math-overview"]', "5. The notation",
         "The math panels use Turner's notation, tokens as columns. This note says, once, how that maps onto the "
         "row-per-token arrays shown everywhere else.", ("details:[data-tour=\"math-overview\"]",)),
    Step('[data-tour="embedding-maps"]', "6. Embedding",
         "Each token id selects a row of the token embedding, each position a row of the position embedding; the "
         "sum enters block 1. Hover the maps (or focus them and use the arrow keys) to read every value."),
    Step('[data-tour="heads"]', "7. Attention heads",
         "Each head of the layer has its own attention pattern. Click one to select it."),
    Step('[data-tour="qkv"]', "8. Queries, keys and values",
         "Layer norm 1's output times c_attn gives every token a query, a key and a value per head."),
    Step('[data-tour="attention-matrix"]', "9. The attention matrix",
         "Row = the token being updated, column = the token it looks at. Each row sums to 1; the hatched cells are "
         "the future, masked out."),
    Step('[data-testid="derivation"]', "10. How the matrix is computed",
         "Step through QKᵀ, the scaling by √K, the causal mask, the softmax, the weighted sum of values, the head "
         "output, the concatenation and the output projection — each with its real matrix.", ("derivation",)),
    Step('[data-tour="block-ln1"]', "11. Layer norm",
         "Each token's vector is shifted to mean 0 and scaled to variance 1, then scaled and shifted by learned "
         "weights. The table lists every token's mean and variance."),
    Step('[data-tour="block-res1"]', "12. Residual connection",
         "The attention output is added to the stream, not substituted for it: res_1 = x + attn_proj."),
    Step('[data-tour="block-fc"]', "13. MLP expansion and its weights",
         "The MLP widens each token 4× with c_fc. The weight button opens the real matrix, downsampled.",
         ("popover:first:#view-block .weights-pop[id$=\"-c_fc\"]",)),
    Step('[data-tour="block-gelu"]', "14. GELU",
         "The non-linearity, element by element: the plot puts one token's activations on the curve."),
    Step('[data-tour="block-res2"]', "15. The block's output",
         "The MLP projects back to D numbers and is added again: res_2 is the input of the next block."),
    Step('[data-tour="sampling"]', "16. Temperature, top-k, top-p",
         "These change how the next token is drawn from the same logits: the model does not run again."),
    Step('[data-tour="predictions"]', "17. Probabilities",
         "The most likely next tokens; the sampled one is highlighted. Click one to see its probability computed."),
    Step('[data-tour="walkthrough"]', "18. One probability, step by step",
         "Its logit is a dot product with a row of the token embedding; then temperature, filtering and softmax."),
    Step('[data-tour="console"]', "19. Python console",
         "The same Python objects are here to inspect: trace, tokens, model. Try trace[\"h.0.att\"].shape."),
)


def render(index: int, steps=STEPS) -> str:
    """The tour card for step ``index`` (0-based)."""
    if not 0 <= index < len(steps):
        raise ValueError(f"tour step {index} out of range 0..{len(steps) - 1}")
    step = steps[index]
    last = index == len(steps) - 1
    return (
        f'<div class="tour" popover="manual" role="dialog" aria-modal="false" aria-labelledby="tour-title" data-testid="tour" '
        f'data-step="{index}">'
        f'<p class="tour-count">Step {index + 1} of {len(steps)}</p>'
        f'<h2 id="tour-title">{escape(step.title)}</h2><p>{escape(step.text)}</p>'
        f'<div class="actions">'
        f'<button type="button" id="tour-prev" data-action="tour-prev" data-testid="tour-prev"{" disabled" if index == 0 else ""}>Back</button>'
        f'<button type="button" id="tour-next" class="primary" data-action="{"tour-end" if last else "tour-next"}" '
        f'data-testid="tour-next">{"Finish" if last else "Next"}</button>'
        f'<button type="button" id="tour-end" data-action="tour-end" data-testid="tour-end">Close tour</button></div></div>'
    )
