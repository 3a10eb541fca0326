"""Messages between the page and the model worker as JavaScript objects (issue 16).

``{head: JSON text, buffers: [ArrayBuffer, ...]}``: each numpy array is copied once into its
own ArrayBuffer, which postMessage then transfers (moves, no clone); the receiver copies each
buffer once into a numpy byte array (protocol.unpack views it with its dtype and shape).
"""

from __future__ import annotations

import json

import js
import numpy as np
from pyodide.ffi import to_js


def outgoing(head: dict, arrays) -> tuple:
    """(message, transfer list) for ``target.postMessage(message, transfer)``."""
    buffers = []
    for a in arrays:
        flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        typed = js.Uint8Array.new(flat.size)
        typed.assign(flat)
        buffers.append(typed.buffer)
    message = to_js({"head": json.dumps(head), "buffers": buffers}, dict_converter=js.Object.fromEntries)
    return message, to_js(buffers)


def incoming(data) -> tuple[dict, list[np.ndarray]]:
    """(head, arrays) from a message's ``event.data``."""
    arrays = []
    for buffer in data.buffers:
        out = np.empty(buffer.byteLength, dtype=np.uint8)
        js.Uint8Array.new(buffer).assign_to(out)
        arrays.append(out)
    return json.loads(data.head), arrays
