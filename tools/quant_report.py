"""Measure what quantization costs: int8 and q4 against the float32 checkpoint on real text.

    python tools/quant_report.py build/default-model-hf --text build/corpus/heldout.txt \
        --int8 weights/mini --q4 weights/mini-q4 --out weights/mini/quality.json

The float32 checkpoint is not committed (29 MB), so these figures are measured here, at build
time, and committed; tests/test_quality.py checks they belong to the committed shards and
re-measures the q4-vs-int8 figure on tests/fixtures/english.txt in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "py"))

from glassbox import weights  # noqa: E402
from glassbox.convert import _to_glassbox, config_from_hf, read_state  # noqa: E402
from glassbox.evaluate import compare  # noqa: E402
from glassbox.model import load  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "english.txt")
VOCAB = os.path.join(ROOT, "vendor", "gpt2")


def shard_hashes(folder: str) -> list[str]:
    with open(os.path.join(folder, weights.MANIFEST)) as f:
        return [s["sha256"] for s in json.load(f)["shards"]]


def fixture_figures(int8_dir: str, q4_dir: str) -> dict:
    """q4 against int8 on the committed fixture text: what CI can re-measure."""
    int8, q4 = load(int8_dir, VOCAB), load(q4_dir, VOCAB)
    with open(FIXTURE, encoding="utf-8") as f:
        ids = int8.tokenizer.encode(f.read())
    return compare(int8.params, q4.params, int8.config, ids)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf", help="the float32 Hugging Face checkpoint folder the models were converted from")
    ap.add_argument("--text", required=True, help="held-out text file")
    ap.add_argument("--tokens", type=int, default=8192, help="how many held-out tokens to score")
    ap.add_argument("--int8", required=True)
    ap.add_argument("--q4", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    with open(os.path.join(args.hf, "config.json")) as f:
        config = config_from_hf(json.load(f))
    fp32 = _to_glassbox(read_state(args.hf), config)
    int8, q4 = load(args.int8, VOCAB), load(args.q4, VOCAB)
    with open(args.text, encoding="utf-8") as f:
        ids = np.asarray(int8.tokenizer.encode(f.read()), dtype=np.int64)[:args.tokens]
    t0 = time.time()
    report = {
        "text": os.path.relpath(args.text, ROOT),
        "tokens": int(ids.size),
        "int8_vs_fp32": compare(fp32, int8.params, config, ids),
        "q4_vs_fp32": compare(fp32, q4.params, config, ids),
        "q4_vs_int8_fixture": fixture_figures(args.int8, args.q4),
        "shards": {"int8": shard_hashes(args.int8), "q4": shard_hashes(args.q4)},
        "command": "python tools/quant_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps(report, indent=1))
    print(f"measured in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
