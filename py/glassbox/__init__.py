"""Glassbox core: GPT-2 in numpy (and WGSL), with every intermediate tensor named.

Standard library + numpy only. Never imports ``js`` or ``pyscript``: the same code runs in
CPython and in Pyodide; the page's DOM code lives in ``py/app``.

Dimension legend (used in every docstring, every WGSL ``Params`` struct and every test):

    N  tokens in the sequence being run (queries)
    T  tokens attended to (keys: past + current; T == N without a KV cache)
    D  model width (n_embd)
    H  attention heads (n_head)
    K  head size, D / H
    F  MLP width, 4 * D
    V  vocabulary size
    L  layers (n_layer)
    C  context length (n_positions)

Weight layout (the Glassbox format, see ``weights.py``): every matrix is stored
``[out, in]`` (rows are output channels), so ``y = x @ W.T + b``. Hugging Face GPT-2 stores
its Conv1D weights ``[in, out]``; the converter transposes them in exactly one place
(``convert.py``). The tied token embedding ``wte`` is ``[V, D]`` and serves both the
embedding gather and the logits ``x @ wte.T``.

Data flows one way: text -> tokens -> forward (GPU or numpy) -> Trace -> views.
"""

__version__ = "0.1.0"
