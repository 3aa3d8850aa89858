"""The dashboard: ``GET /`` (the page) and ``GET /static/{name}`` (its script and style).

The page is static: it asks for the token and reads the API like any client. Its list of
signals is filled from the vocabulary (:data:`attnkit.llm.signals.VOCABULARY`) when the app is
built, so that the page offers every signal the service stores.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from attnkit.htmlkit import escape
from attnkit.llm.signals import RECORD_SIGNALS, VOCABULARY
from attnkit.monitor.tables import LENGTHS

__all__ = ["WEB", "dashboard_html", "router"]

WEB = Path(__file__).parent.parent / "web"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
OPTIONS = "<!-- signal options -->"  # where the page's list of signals goes

router = APIRouter(include_in_schema=False)


def dashboard_html() -> bytes:
    """The dashboard's HTML, with an option per stored signal and per length."""
    labels = {name: VOCABULARY[name].label for name in RECORD_SIGNALS}
    labels.update({name: name.replace("_", " ") for name in LENGTHS})
    options = "\n      ".join(
        f'<option value="{escape(name)}">{escape(label)}</option>' for name, label in labels.items()
    )
    return (WEB / "index.html").read_text(encoding="utf-8").replace(OPTIONS, options).encode()


def assets() -> dict[str, bytes]:
    return {name: (WEB / name).read_bytes() for name in ASSETS}


@router.get("/")
def dashboard(request: Request) -> Response:
    return Response(request.app.state.dashboard, media_type="text/html; charset=utf-8")


@router.get("/static/{name}")
def static(name: str, request: Request) -> Response:
    found = request.app.state.assets
    if name not in found:
        raise HTTPException(404, "no such asset")
    return Response(found[name], media_type=ASSETS[name])
