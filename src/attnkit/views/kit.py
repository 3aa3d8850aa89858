"""What every notebook view shares: the :class:`View` object, scoped style, unique ids, compact
binary payloads for inline scripts, a colour map and a dependency-free PNG encoder. Style,
escaping and number formatting are those of every attnkit page (:mod:`attnkit.htmlkit`).

A view is one ``<div>`` with its own ``<style>`` (every rule scoped under ``.attnkit-view``, so a
notebook's own style is left alone) and, where it is interactive, one inline ``<script>`` that
reads its data from a JSON ``<script type="application/json">`` element: no CDN, no external file,
nothing fetched. What does not need a script (tables, shaded tokens, the model-view picture) is
plain HTML, so a static render that drops scripts still shows it.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import uuid
import zlib

import numpy as np

from attnkit._moved import moved_name
from attnkit.htmlkit import NEGATIVE, POSITIVE, WEIGHT, stylesheet
from attnkit.htmlkit import png_data_uri as _png_uri

__all__ = ["View", "colormap", "encode_array", "image_data_uri", "script_json", "view_id"]

_COUNTER = itertools.count()

_VIEW_RULES = """
.attnkit-view{font:13px/1.45 system-ui,sans-serif;color:var(--ak-fg);max-width:100%}
.attnkit-view h4{margin:.6rem 0 .3rem;font-size:14px}
.attnkit-view table.attnkit-table td,.attnkit-view table.attnkit-table th{text-align:left}
.attnkit-view table.attnkit-table .num{text-align:right;font-variant-numeric:tabular-nums}
.attnkit-view .tok{cursor:default}
.attnkit-view .tok.sel{outline:2px solid #111}
.attnkit-view .controls{margin:.3rem 0}
.attnkit-view .controls select{margin-right:.6rem}
.attnkit-view canvas,.attnkit-view img.map{image-rendering:pixelated;border:1px solid #ccc}
.attnkit-view .scroll{max-height:22rem;overflow:auto;border:1px solid #eee;padding:.2rem}
"""
STYLE = stylesheet(_VIEW_RULES, scope=".attnkit-view")  # the kit's rules under the view's <div>

# viridis at 9 stops (matplotlib's), interpolated linearly between them
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
VIRIDIS_JS = json.dumps(_VIRIDIS.astype(int).tolist())


class View:
    """An HTML fragment that displays itself in a notebook (``_repr_html_``).

    Attributes:
        html: the fragment (one ``<div class="attnkit-view">`` with its style and script).
    """

    def __init__(self, fragment: str) -> None:
        self.html = fragment

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


def view_id(kind: str) -> str:
    """A DOM id unique in the page, even across kernels writing into one notebook."""
    return f"attnkit-{kind}-{uuid.uuid4().hex[:8]}-{next(_COUNTER)}"


def wrap(kind: str, body: str, script: str = "", data: object = None) -> View:
    """The view's ``<div>``: scoped style, ``body``, and the script with its JSON ``data``.

    The script runs as ``(function(root, data){...})(element, parsed data)``.
    """
    ident = view_id(kind)
    # a class on every table keeps site themes' table styles (mkdocs-material's) off them
    body = body.replace("<table>", '<table class="attnkit-table">')
    parts = [
        f'<div class="attnkit-view attnkit-{kind}" id="{ident}">',
        f"<style>{STYLE}</style>",
        body,
    ]
    if script:
        parts.append(
            f'<script type="application/json" class="attnkit-data">{script_json(data)}</script>'
        )
        parts.append(
            "<script>(function(){"
            f"var root=document.getElementById({json.dumps(ident)});"
            "if(!root||root.dataset.ready)return;root.dataset.ready='1';"
            "var data=JSON.parse(root.querySelector('script.attnkit-data').textContent);"
            f"{_SHADE_JS}({script})(root,data);}})();</script>"
        )
    parts.append("</div>")
    return View("\n".join(parts))


def _shade_js() -> str:
    """``tokenShade(name, alpha)`` for the views' scripts: :func:`attnkit.htmlkit.shade` in
    JavaScript, with the same token colours."""
    colors = {"weight": WEIGHT, "positive": POSITIVE, "negative": NEGATIVE}
    return (
        f"var SHADES={json.dumps(colors, separators=(',', ':'))};"
        "function tokenShade(name,alpha){var c=SHADES[name],a=Math.max(0,Math.min(1,alpha));"
        "return 'rgba('+c[0]+','+c[1]+','+c[2]+','+a.toFixed(3)+')';}"
    )


_SHADE_JS = _shade_js()


def script_json(data: object) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no HTML comment opener)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def encode_array(array: np.ndarray) -> str:
    """Base64 of a little-endian ``uint8``/``uint16``/``uint32`` array (decoded by the view's
    script into the matching typed array)."""
    if array.dtype not in (np.uint8, np.uint16, np.uint32):
        raise TypeError(f"array must be uint8, uint16 or uint32, got {array.dtype}")
    return base64.b64encode(
        np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    ).decode()


def colormap(values: np.ndarray) -> np.ndarray:
    """Viridis RGB ``(..., 3)`` ``uint8`` of ``values`` in ``[0, 1]`` (clipped)."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(x).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (x - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac
    return rgb.round().astype(np.uint8)


def image_data_uri(rgb: np.ndarray) -> str:
    """A ``data:image/png`` URI of an ``(height, width, 3)`` ``uint8`` image (no dependency:
    PNG written with zlib, filter type 0)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (height, width, 3) uint8, got {rgb.shape} {rgb.dtype}")
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return _png_uri(png)


def __getattr__(name: str):
    return moved_name(__name__, name)
