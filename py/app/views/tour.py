"""The guided tour: a short textbook of the model, one step per idea, each pointing at the
part of the page that shows it, and saying *why* the model does it, with this model's sizes.

A step names the element it highlights (``target``: "anchor:NAME" for data-tour=NAME,
"testid:NAME" for data-testid=NAME) and what must be opened first (``opens``:
"view:NAME" opens a detailed view (at the selected layer), "derivation" expands the attention
derivation, "details:ANCHOR" opens a <details>, "popover:NAME" shows the first weight
popover whose id ends in NAME). The tour controller performs the openings; the page scrolls
the target into view and outlines it. The card is a manual popover (a bottom sheet on
phones), shown after anything the step opened, so it stays on top of an open popover.

Texts are templates filled with the model's sizes: {L} layers, {H} heads, {D} width, {K}
head size, {F} MLP width, {V} vocabulary, {C} context, {N} tokens now, {D3} = 3D.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from glassbox.config import GPTConfig


@dataclass(frozen=True)
class Step:
    target: str
    title: str
    text: str
    opens: tuple[str, ...] = ()


STEPS = (
    Step("anchor:input", "Text becomes tokens",
         "The model reads numbers, not letters. A tokenizer cuts your text into pieces from a fixed vocabulary of "
         "{V} tokens: a common word is one token, a rare word several pieces. Your text is {N} tokens; the model can "
         "look at most {C} tokens back."),
    Step("anchor:overview", "The whole model on one picture",
         "Read the map left to right: the tokens become vectors (the embedding), pass through {L} identical blocks, "
         "and the last token's vector becomes a probability for each of the {V} tokens. Each ribbon is one token; "
         "its width is the size of its vector at that point of this run. Click any part to open it."),
    Step("anchor:generate", "Generating is one prediction at a time",
         "The model only ever predicts the next token. Generate draws one from the probabilities, appends it and "
         "runs again. Earlier tokens' keys and values are kept (the KV cache), so only the new token is computed: "
         "a token never changes what came before it."),
    Step("anchor:embedding-maps", "Why an embedding",
         "A token id is just a label; a network needs numbers it can add and multiply. Each id picks its own row of "
         "{D} learned numbers from the token embedding ({V}×{D}). Training moves tokens used in similar places to "
         "similar rows.", ("view:embedding",)),
    Step("anchor:embedding-maps", "Why a position embedding",
         "Attention, the block's way of mixing tokens, treats its inputs as a set: on its own it cannot tell "
         "\u201cdog bites man\u201d from \u201cman bites dog\u201d. So a second learned row, one per position "
         "(0 to {C_1}), is added to each token's vector. The sum is the residual stream."),
    Step("anchor:sankey", "The residual stream",
         "Each token keeps one vector of {D} numbers from the embedding to the end. No block replaces it: each reads "
         "it and adds its result back. Why: a block then only has to learn a correction, and a deep stack of "
         "{L} blocks stays trainable because the sum passes signals straight through."),
    Step("anchor:block-ln1", "Layer norm: a steady scale",
         "Before each sublayer, every token's vector is shifted to mean 0 and scaled to variance 1, then scaled and "
         "shifted by learned weights. Why: vectors in the stream grow as blocks add to them; normalising lets each "
         "sublayer see numbers on the same scale whatever their size.", ("view:block",)),
    Step("anchor:qkv", "Queries, keys and values",
         "Attention lets a token take information from earlier tokens. From its normalised vector each token makes "
         "a query (what am I looking for?), a key (what do I offer?) and a value (what I pass on if chosen): one "
         "product with c_attn gives all three, {D3} numbers per token.", ("view:attention",)),
    Step("anchor:heads", "Why several heads",
         "The {D} numbers of each query, key and value are split into {H} heads of {K}. Each head attends on its "
         "own, so one can follow the previous token while another looks for the same word earlier. The thumbnails "
         "show each head's pattern in this layer."),
    Step("anchor:attention-matrix", "Scores: how well a query matches a key",
         "For every pair (query token, key token) the score is the dot product of the query and the key: large when "
         "they point the same way. Row = the token being updated, column = the token it looks at."),
    Step("testid:derivation", "Why divide by \u221a{K}",
         "A dot product of {K} numbers grows with {K}: unscaled, the biggest score would dominate the softmax and "
         "every other weight would be almost 0, so the head could not learn. Dividing by \u221a{K} keeps scores "
         "near 1. Step through the derivation to see each stage with its real matrix.", ("derivation",)),
    Step("anchor:attention-matrix", "The causal mask",
         "A token may not look at later tokens: when generating they do not exist yet, and in training seeing them "
         "would let the model copy the answer. Their scores are set to minus infinity, so their weight is 0: the "
         "hatched cells above the diagonal."),
    Step("anchor:attention-matrix", "Softmax: scores become weights",
         "Each row goes through softmax: exponentials make every weight positive and keep the order of the scores, "
         "and dividing by their sum makes the row add up to 1. Each row is now a recipe: how much of each earlier "
         "token to take."),
    Step("anchor:attention-matrix", "Mixing the values",
         "Each token's head output is the weighted average of the values, with its row's weights. The {H} heads' "
         "outputs ({K} numbers each) are put side by side ({D}) and projected by c_proj, then added to the stream."),
    Step("anchor:block-res1", "The first residual addition",
         "res_1 = x + attn_proj. The stream now carries what this token had plus what it gathered from others."),
    Step("anchor:block-fc", "The MLP: thinking about each token alone",
         "Attention moves information between tokens; the MLP works on each token by itself. It widens the vector "
         "from {D} to {F} numbers with c_fc: each of the {F} is a learned pattern detector. The weights button shows "
         "the real matrix.", ("view:block", "popover:c_fc")),
    Step("anchor:block-gelu", "Why a non-linearity",
         "GELU bends each of the {F} numbers: negatives are squashed towards 0, positives pass. Without it the two "
         "matrices of the MLP would multiply into one, and the whole stack would be no more than one linear map."),
    Step("anchor:block-res2", "The block's output",
         "c_proj brings the {F} numbers back to {D} and adds them to the stream: res_2 is the input of the next "
         "block. The same recipe repeats {L} times with different weights; later blocks build on what earlier ones "
         "wrote into the stream."),
    Step("anchor:nav", "Layers and heads differ",
         "Pick another layer or head here, or on the map: early layers often track positions and the previous "
         "token, later ones what the text is about. Every view follows the choice."),
    Step("anchor:predictions", "From a vector to {V} scores",
         "After the last block a final layer norm, then the last token's vector is compared, by dot product, with "
         "the embedding row of every token in the vocabulary: {V} scores (logits). Reusing the embedding saves "
         "{V}×{D} weights and means a token is recognised by the same vector it enters with.", ("view:output",)),
    Step("anchor:pipeline", "Softmax and temperature",
         "Softmax turns the {V} logits into probabilities. Temperature divides the logits first: below 1 the likely "
         "tokens become likelier, above 1 the distribution flattens. At 0 the model always takes the top token."),
    Step("anchor:sampling", "Why sample at all",
         "Always taking the most likely token makes dull, repetitive text. Sampling picks by probability; top-k and "
         "top-p first cut the long tail of unlikely tokens, which is where nonsense comes from. Changing these never "
         "runs the model again."),
    Step("anchor:walkthrough", "One probability, step by step",
         "Click a prediction to see its number computed: the dot product with its embedding row, the temperature, "
         "the filter, the softmax. Every number is from this run."),
    Step("anchor:console", "Look for yourself",
         "The same Python objects are here: trace, tokens, model. Try trace.keys(), or trace[\"h.0.att\"].shape, "
         "which is ({H}, {N}, {N}): heads × queries × keys. help() lists what is there."),
)


def sizes(config: GPTConfig, n: int) -> dict[str, int]:
    D = config.n_embd
    return {"L": config.n_layer, "H": config.n_head, "D": D, "K": config.head_size, "F": config.mlp_width,
            "V": config.vocab_size, "C": config.n_positions, "C_1": config.n_positions - 1, "N": n, "D3": 3 * D}


def render(index: int, steps=STEPS, *, config: GPTConfig, n: int) -> str:
    """The tour card for step ``index`` (0-based), its text filled with the model's sizes."""
    if not 0 <= index < len(steps):
        raise ValueError(f"tour step {index} out of range 0..{len(steps) - 1}")
    step = steps[index]
    last = index == len(steps) - 1
    values = sizes(config, n)
    title, text = step.title.format(**values), step.text.format(**values)
    return (
        f'<div class="tour" popover="manual" role="dialog" aria-modal="false" aria-labelledby="tour-title" data-testid="tour" '
        f'data-step="{index}">'
        f'<p class="tour-count">Step {index + 1} of {len(steps)}</p>'
        f'<h2 id="tour-title">{escape(title)}</h2><p>{escape(text)}</p>'
        f'<div class="actions">'
        f'<button type="button" id="tour-prev" data-action="tour-prev" data-testid="tour-prev"{" disabled" if index == 0 else ""}>Back</button>'
        f'<button type="button" id="tour-next" class="primary" data-action="{"tour-end" if last else "tour-next"}" '
        f'data-testid="tour-next">{"Finish" if last else "Next"}</button>'
        f'<button type="button" id="tour-end" data-action="tour-end" data-testid="tour-end">Close tour</button></div></div>'
    )
