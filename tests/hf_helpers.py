"""Random Hugging Face GPT-2 checkpoints for tests (real GPT-2 cannot be downloaded here)."""

from __future__ import annotations

import numpy as np


def random_hf_model(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=97, seed=0, n_inner=None):
    """A GPT2LMHeadModel with random weights, its layer norms and biases perturbed too
    (Hugging Face initialises them to 1 and 0, which would hide layout mistakes)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                        vocab_size=vocab_size, n_inner=n_inner, bos_token_id=0, eos_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config._attn_implementation = "eager"  # exposes attention probabilities
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def glassbox_params(model) -> dict[str, np.ndarray]:
    """The model's weights in the Glassbox layout, via the converter's own mapping."""
    from glassbox.convert import _to_glassbox, config_from_hf

    config = config_from_hf(model.config.to_dict())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return _to_glassbox(state, config), config
