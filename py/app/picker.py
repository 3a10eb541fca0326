"""The model picker: which model the page loads, and the card that lets people choose.

Pure Python, no ``js`` (tested under CPython); py/app/hub_loader.py reads the address and
storage, draws the card in the slot ``picker`` and loads the choice.

A choice is a local folder name (``mini``, listed in weights/index.json) or a Hub repository
``hf:openai-community/gpt2`` (optionally ``@revision``). The address carries it
(``?model=hf:openai-community/gpt2``), localStorage[CHOICE_KEY] remembers it; ``?hub=URL``
sets the Hub's base (default https://huggingface.co). Nothing is asked of the Hub until a
Hub model is picked, and the card says so beside every Hub entry.

Sizes are computed from each model's config: the download is its float32 parameters (what
the streaming converter fetches; buffers are skipped), the size kept on the device its int8
shards (glassbox.hub.stored_bytes). The memory warning follows light mode's rules
(lightmode.decide): the page holds the int8 weights plus float32 copies of the matrices
(the numpy path's working copies), so a model is flagged where that passes the device's
budget: MEMORY_LIGHT on a light-mode device, MEMORY_FULL elsewhere (a page's WebAssembly
memory stops at 4 GB, and browsers kill tabs well before that on most machines).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

from glassbox import hub, weights
from glassbox.config import GPTConfig

CHOICE_KEY = "glassbox-model"  # localStorage: the last model picked
HF_PREFIX = "hf:"
SCHEME = "int8"  # what the page quantizes Hub checkpoints to
MIB = 1024 * 1024
MEMORY_LIGHT = 512 * MIB
MEMORY_FULL = 1536 * MIB


@dataclass(frozen=True)
class HubModel:
    """A GPT-2-family checkpoint on the Hub, with its shape (from its config.json)."""

    repo: str
    label: str
    config: GPTConfig

    @property
    def params(self) -> int:
        return sum(int(_prod(s)) for s in weights.expected_shapes(self.config).values())

    @property
    def download_bytes(self) -> int:
        return 4 * self.params

    @property
    def kept_bytes(self) -> int:
        return hub.stored_bytes(self.config, SCHEME)


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _gpt2(n_layer: int, n_head: int, n_embd: int) -> GPTConfig:
    return GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=1024, vocab_size=50257)


# The GPT-2 family on the Hub (shapes from each repository's config.json).
CATALOG = (
    HubModel("openai-community/gpt2", "GPT-2 (124M)", _gpt2(12, 12, 768)),
    HubModel("distilbert/distilgpt2", "DistilGPT-2 (82M)", _gpt2(6, 12, 768)),
    HubModel("openai-community/gpt2-medium", "GPT-2 medium (355M)", _gpt2(24, 16, 1024)),
)


@dataclass(frozen=True)
class Choice:
    """What to load: a local folder (``name``) or a Hub repository (``repo``, ``revision``)."""

    name: str = ""
    repo: str = ""
    revision: str = hub.DEFAULT_REVISION

    @property
    def is_hub(self) -> bool:
        return bool(self.repo)

    @property
    def spec(self) -> str:
        """The ?model= value."""
        if not self.is_hub:
            return self.name
        rev = "" if self.revision == hub.DEFAULT_REVISION else "@" + self.revision
        return HF_PREFIX + self.repo + rev


def parse_choice(value: str) -> Choice:
    """A ?model= value -> Choice; ValueError with a message for people when it is neither."""
    value = (value or "").strip()
    if value.startswith(HF_PREFIX):
        try:
            repo, revision = hub.parse_spec(value[len(HF_PREFIX):])
        except hub.HubError as e:
            raise ValueError(f"?model={value}: {e}") from None
        return Choice(repo=repo, revision=revision)
    if not value or value.startswith(".") or not all(ch.isalnum() or ch in "-_." for ch in value):
        raise ValueError(f"?model={value!r} is not a model folder name (or hf:<repo id> for the Hub)")
    return Choice(name=value)


def pick(query: str | None, remembered: str | None, default: str) -> Choice:
    """The address wins, then the remembered choice (when it still parses), then the default."""
    if query:
        return parse_choice(query)
    if remembered:
        try:
            return parse_choice(remembered)
        except ValueError:
            pass
    return Choice(name=default)


def hub_base(query: str | None) -> str:
    """?hub=URL (http or https, no credentials) or the default Hub."""
    if not query:
        return hub.DEFAULT_HUB
    parts = urlsplit(query)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        raise ValueError(f"?hub={query!r} is not an http(s) address of a Hub")
    return query.rstrip("/")


def folder_url(base: str, choice: Choice) -> str:
    """Where a converted Hub model lives in the model store (never fetched from the network)."""
    host = urlsplit(base).netloc.replace(":", "_")
    return f"./hub/{host}/{choice.repo}/{choice.revision}/"


def memory_needed(config: GPTConfig) -> int:
    """About what the page holds for a model: int8 weights plus float32 copies of the matrices."""
    model = HubModel("", "", config)
    return model.kept_bytes + 4 * model.params


def device_why(mode) -> str:
    """Why the device is in light mode (a lightmode.Mode), when the device decided it."""
    return " and ".join(mode.reasons) if mode.by == "device" else ""


def memory_warning(config: GPTConfig, light: bool, why: str = "") -> str | None:
    need = memory_needed(config)
    budget = MEMORY_LIGHT if light else MEMORY_FULL
    if need <= budget:
        return None
    if light:
        where = f"this device runs in light mode ({why})" if why else "this device runs in light mode"
    else:
        where = "that is more than most browsers give one page"
    return (f"Needs about {need / MIB:,.0f} MiB of memory in the page; {where}: "
            "the tab may run out of memory.")


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB" if n >= 10 * MIB else f"{n / MIB:.1f} MiB"


def render(current: Choice, base: str, local: list[tuple[str, int | None]], stored: set[str],
           light: bool, why: str = "", confirm: Choice | None = None, note: str = "",
           downloading: bool = False) -> str:
    """The picker card. ``local``: (folder, bytes) from weights/index.json; ``stored``: Hub
    specs already converted on this device; ``confirm``: a Hub choice waiting for the
    go-ahead (the page asks before contacting the Hub)."""
    host = escape(urlsplit(base).netloc or base)
    rows = []
    for name, size in local:
        on = not current.is_hub and current.name == name
        rows.append(
            f'<li class="pick-row{" on" * on}" data-testid="pick-local" data-model="{escape(name)}">'
            f'<span class="pick-name">weights/{escape(name)}</span>'
            f'<span class="pick-size">{_mib(size) + " on this site" if size else ""}</span>'
            f'<button type="button" class="pwa-button" data-pick="{escape(name)}"'
            f'{" aria-current=true disabled" if on else ""}>{"In use" if on else "Use"}</button></li>')
    hub_rows = []
    for entry in CATALOG:
        spec = HF_PREFIX + entry.repo
        on = current.is_hub and current.spec == spec
        warn = memory_warning(entry.config, light, why)
        kept = "stored on this device" if spec in stored else f"keeps {_mib(entry.kept_bytes)} (int8)"
        hub_rows.append(
            f'<li class="pick-row{" on" * on}" data-testid="pick-hub" data-model="{escape(spec)}">'
            f'<span class="pick-name">{escape(entry.label)} <code>{escape(entry.repo)}</code></span>'
            f'<span class="pick-size">downloads {_mib(entry.download_bytes)}, {kept}</span>'
            + (f'<span class="pick-warn" data-testid="pick-warning">{escape(warn)}</span>' if warn else "")
            + f'<button type="button" class="pwa-button" data-pick="{escape(spec)}"'
            f'{" aria-current=true disabled" if on else ""}>{"In use" if on else "Download and use"}</button></li>')
    ask = ""
    if confirm is not None:
        ask = (f'<div class="pick-confirm" data-testid="hub-confirm" role="alertdialog" aria-label="Download from the Hub">'
               f'<p>Glassbox will now contact <b>{host}</b> to download <code>{escape(confirm.repo)}</code> '
               f'(revision {escape(confirm.revision)}), convert it to int8 in this page and keep it on this '
               'device. Nothing else is sent.</p>'
               '<button type="button" class="pwa-button primary" data-hub="go" data-testid="hub-go">Download</button> '
               '<button type="button" class="pwa-button" data-hub="cancel" data-testid="hub-cancel">'
               'Cancel (use the default model)</button></div>')
    if downloading:
        ask += ('<p class="pick-busy">Downloading from the Hub (progress above). '
                '<button type="button" class="pwa-button" data-hub="stop" data-testid="hub-stop">'
                'Cancel download</button></p>')
    is_open = " open" if (confirm is not None or note or downloading) else ""
    return (
        '<h2 class="pick-title visually-hidden">Model</h2>'
        + ask
        + (f'<p class="pick-note warn" data-testid="pick-note">{escape(note)}</p>' if note else "")
        + f'<details class="pick-details" data-testid="pick-details"{is_open}>'
        + f'<summary class="pick-current" data-testid="pick-current">Model: <code>{escape(current.spec)}</code>'
          '<span class="long"> — choose another</span></summary>'
        + '<h3 class="pick-sub">On this site</h3><ul class="pick-list">' + "".join(rows) + "</ul>"
        + '<h3 class="pick-sub">GPT-2 family from the Hugging Face Hub</h3>'
        + f'<p class="pick-privacy" data-testid="hub-notice">Picking one of these contacts <b>{host}</b> '
          'and downloads the checkpoint (safetensors, float32) by byte ranges; it is quantized to int8 '
          'here and kept on this device for offline use. Until you pick one, this page asks nothing of '
          'that site.</p>'
        + '<ul class="pick-list">' + "".join(hub_rows) + "</ul>"
        + '<form class="pick-form" data-testid="hub-form" data-hub="form">'
          '<label for="hub-repo">Any GPT-2-family repository</label>'
          '<input id="hub-repo" name="repo" data-testid="hub-repo" placeholder="owner/name" '
          'autocomplete="off" spellcheck="false" inputmode="url">'
          '<button type="submit" class="pwa-button">Download and use</button></form></details>'
    )
