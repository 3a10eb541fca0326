#!/usr/bin/env python3
"""GPT-2 as an ONNX graph with a KV cache, from Glassbox's float32 parameters (the peer's model).

    python3 tools/peer_onnx.py OUT_DIR [--config gpt2-small] [--int8]

tools/bench_peer.py runs ONNX Runtime Web on the graph this writes, so that the peer and
Glassbox compute the same function of the same weights. The graph is written op by op with
``onnx.helper`` from ``glassbox.reference``'s steps (rather than exported from torch): every
op is one a GPT-2 export from torch.onnx or optimum also emits (Gather, LayerNormalization,
MatMul, Add, Split, Reshape, Transpose, Concat, Softmax, Tanh...), weights are [in, out] for
MatMul as such exports store them, and the tied embedding is stored once ([D, V], gathered
by columns for the embedding and multiplied for the logits).

Inputs (batch 1, dimension letters of ``glassbox/__init__``; T cached positions, S = T + N):

    input_ids     int64 [N]
    position_ids  int64 [N]        T, T+1, ..., T+N-1
    attn_bias     float [N, S]     0 where query i may see key s, -1e30 elsewhere
    past_k.L, past_v.L float [H, T, K] for each layer L (T may be 0)

Outputs: ``logits`` [N, V] and ``present_k.L``, ``present_v.L`` [H, S, K].

``--int8`` also writes the dynamically quantized copy (onnxruntime.quantization.quantize_dynamic
on the MatMuls: int8 weights per output channel, activations quantized per call), as a
peer running int8 weights would. Needs the pinned ``onnx`` and ``onnxruntime`` of
requirements-test.txt.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))

from glassbox.config import GPTConfig  # noqa: E402
from glassbox.reference import MASK_VALUE, causal_mask  # noqa: E402

OPSET = 17  # LayerNormalization is in the default domain from 17


def build_model(params: dict[str, np.ndarray], config: GPTConfig):
    """The onnx.ModelProto of GPT-2 with a KV cache (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    D, H, K, L = config.n_embd, config.n_head, config.head_size, config.n_layer
    nodes, inits, named = [], [], set()
    counter = [0]

    def const(name: str, value) -> str:
        if name not in named:
            named.add(name)
            inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(kind: str, inputs: list[str], **attrs) -> str:
        counter[0] += 1
        out = f"{kind.lower()}_{counter[0]}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def weight_t(name: str) -> str:  # Glassbox [out, in] -> MatMul's [in, out]
        return const(name, np.ascontiguousarray(params[name].T).astype(np.float32))

    def linear(x: str, prefix: str) -> str:
        return op("Add", [op("MatMul", [x, weight_t(prefix + ".weight")]), const(prefix + ".bias", params[prefix + ".bias"])])

    def layer_norm(x: str, prefix: str) -> str:
        return op("LayerNormalization", [x, const(prefix + ".weight", params[prefix + ".weight"]),
                                         const(prefix + ".bias", params[prefix + ".bias"])],
                  axis=-1, epsilon=config.layer_norm_epsilon)

    def gelu(x: str) -> str:  # GPT-2's tanh approximation, as torch.onnx writes it below opset 20
        cube = op("Mul", [op("Mul", [x, x]), x])
        inner = op("Add", [x, op("Mul", [cube, const("gelu.a", np.float32(0.044715))])])
        t = op("Tanh", [op("Mul", [inner, const("gelu.c", np.float32(math.sqrt(2 / math.pi)))])])
        return op("Mul", [op("Mul", [x, const("gelu.half", np.float32(0.5))]), op("Add", [t, const("gelu.one", np.float32(1))])])

    heads_shape = const("shape.heads", np.array([-1, H, K], dtype=np.int64))
    rows_shape = const("shape.rows", np.array([-1, D], dtype=np.int64))
    split_sizes = const("split.qkv", np.array([D, D, D], dtype=np.int64))
    inv_sqrt_k = const("attn.scale", np.float32(1 / math.sqrt(K)))

    wte_t = const("wte.weight.T", np.ascontiguousarray(params["wte.weight"].T).astype(np.float32))  # [D, V]
    tok = op("Transpose", [op("Gather", [wte_t, "input_ids"], axis=1)], perm=[1, 0])  # [N, D]
    pos = op("Gather", [const("wpe.weight", params["wpe.weight"].astype(np.float32)), "position_ids"], axis=0)
    x = op("Add", [tok, pos])
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["N"]),
              helper.make_tensor_value_info("attn_bias", TensorProto.FLOAT, ["N", "S"])]
    outputs = []
    for layer in range(L):
        p = f"h.{layer}."
        qkv = linear(layer_norm(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (f"{p}{n}" for n in "qkv")
        nodes.append(helper.make_node("Split", [qkv, split_sizes], [q, k, v], axis=1))
        heads = lambda t: op("Transpose", [op("Reshape", [t, heads_shape])], perm=[1, 0, 2])  # noqa: E731  [H, N, K]
        k_all, v_all = f"present_k.{layer}", f"present_v.{layer}"
        nodes.append(helper.make_node("Concat", [f"past_k.{layer}", heads(k)], [k_all], axis=1))
        nodes.append(helper.make_node("Concat", [f"past_v.{layer}", heads(v)], [v_all], axis=1))
        for name in (f"past_k.{layer}", f"past_v.{layer}"):
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [H, "T", K]))
        for name in (k_all, v_all):
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [H, "S", K]))
        scores = op("MatMul", [heads(q), op("Transpose", [k_all], perm=[0, 2, 1])])  # [H, N, S]
        att = op("Softmax", [op("Add", [op("Mul", [scores, inv_sqrt_k]), "attn_bias"])], axis=-1)
        concat = op("Reshape", [op("Transpose", [op("MatMul", [att, v_all])], perm=[1, 0, 2]), rows_shape])
        res1 = op("Add", [x, linear(concat, p + "attn.c_proj")])
        mlp = linear(gelu(linear(layer_norm(res1, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
        x = op("Add", [res1, mlp])
    nodes.append(helper.make_node("MatMul", [layer_norm(x, "ln_f"), wte_t], ["logits"]))
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", config.vocab_size]))
    graph = helper.make_graph(nodes, "glassbox_gpt2_kv", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="glassbox tools/peer_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def feeds(config: GPTConfig, ids, past: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The graph's inputs for ids after the cached ``past`` (present_* of the previous call)."""
    ids = np.asarray(ids, dtype=np.int64)
    H, K = config.n_head, config.head_size
    t = 0 if not past else past["present_k.0"].shape[1]
    bias = np.where(causal_mask(ids.size, t + ids.size), np.float32(0), MASK_VALUE).astype(np.float32)
    out = {"input_ids": ids, "position_ids": np.arange(t, t + ids.size, dtype=np.int64), "attn_bias": bias}
    for layer in range(config.n_layer):
        for kv in "kv":
            out[f"past_{kv}.{layer}"] = (past[f"present_{kv}.{layer}"] if past
                                         else np.zeros((H, 0, K), dtype=np.float32))
    return out


def write_models(out_dir: Path, params, config: GPTConfig, int8: bool = True) -> dict[str, Path]:
    """fp32 (and int8) .onnx files in out_dir; returns {"fp32": path, "int8": path}."""
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": out_dir / "gpt2-fp32.onnx"}
    onnx.save_model(build_model(params, config), str(paths["fp32"]))
    if int8:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        paths["int8"] = out_dir / "gpt2-int8.onnx"
        quantize_dynamic(str(paths["fp32"]), str(paths["int8"]), op_types_to_quantize=["MatMul"],
                         per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return paths


def main(argv=None) -> int:
    from glassbox import weights

    sys.path.insert(0, str(ROOT / "py"))
    from app.bench import GPT2_SMALL  # the in-page benchmark's shape and random weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args(argv)
    params = weights.random_checkpoint(GPT2_SMALL, "int8").dequantized()
    for kind, path in write_models(args.out_dir, params, GPT2_SMALL, args.int8).items():
        print(f"{kind}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
