"""The model picker's pure logic (py/app/picker.py): choices, addresses, sizes, warnings, card."""

from __future__ import annotations

import pytest

from app import picker
from glassbox import weights


def test_choices_from_the_address_and_memory():
    assert picker.parse_choice("hf:openai-community/gpt2") == picker.Choice(repo="openai-community/gpt2")
    assert picker.parse_choice("hf:gpt2@v2").revision == "v2"
    assert picker.parse_choice("mini") == picker.Choice(name="mini")
    assert picker.Choice(repo="gpt2", revision="v2").spec == "hf:gpt2@v2"
    assert picker.Choice(repo="openai-community/gpt2").spec == "hf:openai-community/gpt2"
    for bad in ("../x", "hf:a b", "hf:../../etc", ""):
        with pytest.raises(ValueError):
            picker.parse_choice(bad)
    assert picker.pick(None, "hf:distilgpt2", "mini").repo == "distilgpt2"
    assert picker.pick("mini-q4", "hf:distilgpt2", "mini").name == "mini-q4"
    assert picker.pick(None, "junk/../", "mini").name == "mini"  # a bad remembered value is ignored
    assert picker.pick(None, None, "mini").name == "mini"


def test_hub_base_and_store_folder():
    assert picker.hub_base(None) == "https://huggingface.co"
    assert picker.hub_base("http://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    for bad in ("javascript:alert(1)", "ftp://x", "https://user@evil.example", "huggingface.co"):
        with pytest.raises(ValueError):
            picker.hub_base(bad)
    assert picker.folder_url("http://127.0.0.1:9000", picker.Choice(repo="a/b")) == "./hub/127.0.0.1_9000/a/b/main/"


def test_sizes_and_memory_warning():
    gpt2 = picker.CATALOG[0]
    assert gpt2.params == 124_439_808  # GPT-2 small's parameter count (tied lm_head)
    assert gpt2.download_bytes == 4 * gpt2.params
    assert 119 * picker.MIB < gpt2.kept_bytes < 120 * picker.MIB  # int8 matrices + float32 rest
    assert picker.memory_warning(gpt2.config, light=False) is None
    warn = picker.memory_warning(gpt2.config, light=True, why="the screen is phone-sized (360×740 px)")
    assert warn and "light mode" in warn and "phone-sized" in warn
    assert picker.memory_warning(picker.CATALOG[2].config, light=False)  # gpt2-medium: 1.7 GiB


def test_card():
    html = picker.render(picker.Choice(name="mini"), "https://huggingface.co", [("mini", 7 * picker.MIB)],
                         {"hf:distilbert/distilgpt2"}, light=False, confirm=picker.Choice(repo="x/y"))
    assert 'data-testid="hub-notice"' in html and "huggingface.co" in html
    assert 'data-testid="hub-confirm"' in html and "x/y" in html
    assert html.count('data-testid="pick-hub"') == len(picker.CATALOG)
    assert "stored on this device" in html
    assert 'data-pick="mini" aria-current=true disabled' in html
    assert 'data-testid="pick-details" open' in html  # opened while asking
    assert 'pick-details" open' not in picker.render(picker.Choice(name="mini"), "https://h", [], set(), False)
    assert "<script" not in picker.render(picker.Choice(repo="a/b"), "https://h", [("<script>", None)], set(), False)
    assert weights.MANIFEST == "manifest.json"
