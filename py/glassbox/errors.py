"""One error type for every input Glassbox refuses, with a subclass per boundary.

Each boundary checks its input once and raises a subclass of :class:`GlassboxError` whose
message names what was wrong (the option, the file, the field, the tensor) and, where there
is one, what to do. The command line turns any of them into one line on stderr and exit
code 2 (``glassbox.cli.main``); the page shows the message in its error panel.

``GlassboxError`` derives from ValueError so that older callers that catch ValueError keep
working.
"""

from __future__ import annotations


class GlassboxError(ValueError):
    """Input Glassbox refuses; ``str(error)`` is one readable sentence for the person."""


class OptionsError(GlassboxError):
    """A command-line or sampling option out of range (``--rows``, ``-n``, ``--top-p`` ...)."""


class InputError(GlassboxError):
    """Text the model cannot run, with a message meant for the person who typed it."""


class ConvertError(GlassboxError):
    """A checkpoint the converter refuses: the file and the field are named."""


class WeightsError(GlassboxError):
    """A model folder that cannot be used: the message says which file (and tensor) and why."""


class BackendError(GlassboxError):
    """The requested backend cannot run this model on this machine (``--backend gpu``)."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line driver messages are joined)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
