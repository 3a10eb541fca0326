"""Math panels in the notation of Turner, "An Introduction to Transformers" (arXiv 2304.10557).

Turner writes the sequence as a D x N matrix X^(m) with one token per *column*; the
attention matrix A (N x N) has *columns* that sum to one (A_{n,n'} is how much token n feeds
output n'); multi-head self-attention is a sum over heads; the MLP acts on each column; the
layer norm normalizes each column. The panels use that notation with the model's real
sizes, and add GPT-2's details Turner leaves out (biases, the 1/sqrt(K) scale, the final
layer norm, the tied unembedding). The formulas are TeX placeholders (``common.tex``) that
the page renders with KaTeX from vendor/katex.

``NOTATION`` is the one place that states how the panels differ from the arrays on the page.
"""

from __future__ import annotations

from glassbox.config import GPTConfig

from .common import tex

NOTATION = (
    "<p class='notation' data-testid='notation'><strong>Notation, once.</strong> Turner's "
    + tex(r"X^{(m)} \in \mathbb{R}^{D \times N}")
    + " holds one token per <em>column</em>; Glassbox's arrays (and every map on this page) hold one token per "
    "<em>row</em>: <code>trace['emb']</code> is " + tex(r"\big(X^{(0)}\big)^{\top}")
    + " and <code>trace['h.m.res_2']</code> is " + tex(r"\big(X^{(m)}\big)^{\top}")
    + ". Likewise Turner's attention matrix " + tex(r"A_h")
    + " has columns that sum to 1, while <code>trace['h.m.att'][h]</code> is "
    + tex(r"A_h^{\top}")
    + ", a row per query that sums to 1. GPT-2 is <em>pre-norm</em>: each residual branch starts with its own "
    "layer norm (" + tex(r"\bar X = \mathrm{LN}(X)") + ") and the stream itself is never normalized, "
    "except once after the last block (<code>ln_f</code>) before the unembedding; the original Transformer "
    "normalized after each addition instead.</p>"
)


def _block(rows: list[tuple[str, str]]) -> str:
    """Rows of (formula, explanation)."""
    return "".join(
        f'<div class="math-row">{tex(f, display=True)}<p>{text}</p></div>' for f, text in rows
    )


def formulas(section: str, config: GPTConfig, n: int) -> list[tuple[str, str]]:
    D, H, K, F, V = config.n_embd, config.n_head, config.head_size, config.mlp_width, config.vocab_size
    L = config.n_layer
    N = n
    if section == "overview":
        return [
            (rf"X^{{(0)}} \in \mathbb{{R}}^{{{D} \times {N}}} \;\xrightarrow{{\text{{block }}1}}\; X^{{(1)}} \cdots "
             rf"\xrightarrow{{\text{{block }}{L}}}\; X^{{({L})}} \;\xrightarrow{{\mathrm{{LN}}_f,\; W_E^{{\top}}}}\; "
             rf"p \in \mathbb{{R}}^{{{V}}}",
             f"The residual stream: D = {D} numbers per token, N = {N} tokens, through L = {L} blocks, "
             "then one probability per vocabulary entry for the next token."),
            (r"X^{(m)} = \mathrm{TransformerBlock}\big(X^{(m-1)}\big)",
             "Each block mixes information across tokens (attention) and then within each token (MLP)."),
        ]
    if section == "embedding":
        return [
            (rf"x^{{(0)}}_n = W_E\,e_{{\mathrm{{id}}_n}} + W_P\,e_n, \qquad W_E \in \mathbb{{R}}^{{{D} \times {V}}},\; "
             rf"W_P \in \mathbb{{R}}^{{{D} \times {config.n_positions}}}",
             "Column n of X⁽⁰⁾: the token's embedding plus its position's embedding (e is a one-hot vector)."),
        ]
    if section == "attention":
        return [
            (r"\bar x_n = \mathrm{LN}_1\big(x^{(m-1)}_n\big)", "Token-wise layer norm first (pre-norm)."),
            (rf"q_{{h,n}} = U_{{q,h}}\,\bar x_n + b_{{q,h}},\quad k_{{h,n}} = U_{{k,h}}\,\bar x_n + b_{{k,h}},"
             rf"\quad v_{{h,n}} = U_{{v,h}}\,\bar x_n + b_{{v,h}} \in \mathbb{{R}}^{{{K}}}",
             f"H = {H} heads, each with K = D/H = {K} dimensions: the three come from one product with "
             "<code>c_attn</code>."),
            (rf"[A_h]_{{n,n'}} = \frac{{\exp\!\big(k_{{h,n}}^{{\top}} q_{{h,n'}}/\sqrt{{{K}}}\big)}}"
             rf"{{\sum_{{n''\le n'}} \exp\!\big(k_{{h,n''}}^{{\top}} q_{{h,n'}}/\sqrt{{{K}}}\big)}}\;\text{{ for }} n \le n',"
             r"\qquad [A_h]_{n,n'} = 0 \text{ for } n > n'",
             "Column n′ of A is where output n′ looks; it sums to 1 and is causal (no future tokens)."),
            (r"Y^{(m)} = X^{(m-1)} + \sum_{h=1}^{H} W_{O,h}\, V_h\, A_h + b_O, \qquad V_h = [v_{h,1} \cdots v_{h,N}]",
             "Multi-head self-attention as a sum over heads: W_O,h is head h's slice of <code>c_proj</code> "
             "(Turner folds it into one matrix per head). Concatenating the head outputs and multiplying by "
             "<code>c_proj</code> is the same sum."),
        ]
    if section == "block":
        return [
            (r"\mathrm{LN}(x)_d = \gamma_d\,\frac{x_d - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta_d,\quad "
             r"\mu = \tfrac{1}{D}\textstyle\sum_d x_d,\quad \sigma^2 = \tfrac{1}{D}\sum_d (x_d-\mu)^2",
             f"Each token (column) on its own; ε = {config.layer_norm_epsilon:g}, σ² is the biased variance."),
            (r"Y^{(m)} = X^{(m-1)} + \mathrm{MHSA}\big(\mathrm{LN}_1(X^{(m-1)})\big)", "First residual addition."),
            (rf"x^{{(m)}}_n = y^{{(m)}}_n + W_2\,\mathrm{{GELU}}\big(W_1\,\mathrm{{LN}}_2(y^{{(m)}}_n) + b_1\big) + b_2,"
             rf"\quad W_1 \in \mathbb{{R}}^{{{F} \times {D}}},\; W_2 \in \mathbb{{R}}^{{{D} \times {F}}}",
             "The MLP acts on each token separately; second residual addition."),
            (r"\mathrm{GELU}(u) = \tfrac12 u\Big(1 + \tanh\big(\sqrt{2/\pi}\,(u + 0.044715\,u^3)\big)\Big)",
             "GPT-2's tanh approximation of GELU."),
        ]
    if section == "output":
        return [
            (rf"z = W_E^{{\top}}\,\mathrm{{LN}}_f\big(x^{{({L})}}_N\big) \in \mathbb{{R}}^{{{V}}}",
             "Logits of the last token: its final vector against every row of the (tied) token embedding."),
            (r"p_i = \frac{\exp(z_i/T)}{\sum_{j \in S} \exp(z_j/T)} \text{ for } i \in S, \quad p_i = 0 \text{ otherwise}",
             "T is the temperature; S is what top-k and top-p keep (all tokens when both are off). "
             "T = 0 means greedy: p is 1 on the arg-max."),
        ]
    raise ValueError(f"no math panel for section {section!r}")


def panel(section: str, config: GPTConfig, n: int) -> str:
    """A collapsible math panel for a view (``<details class="math">``)."""
    body = _block(formulas(section, config, n))
    note = NOTATION if section == "overview" else (
        '<p class="muted small">Notation as in Turner (tokens as columns); see the note in the overview.</p>')
    return (f'<details class="math" data-testid="math-{section}" data-tour="math-{section}">'
            f'<summary>The math (Turner\'s notation)</summary>{note}{body}</details>')
