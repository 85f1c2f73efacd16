"""GET /: a page to try the service in a browser (record with the microphone or choose a file).

Plain HTML, CSS and JavaScript from ``app/static/``: no build step, nothing loaded from elsewhere. The page
posts to ``/predict`` like any client; it is left out of the OpenAPI schema (it is not part of the API).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import APIError

STATIC = Path(__file__).resolve().parent.parent / "static"
#: The page's files by URL name, with their content types (not guessed: mimetypes differs by platform).
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
ASSETS = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in TYPES} if STATIC.is_dir() else {}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise APIError(404, "not_found", f"no page file '{name}'")
    # no-cache: the browser revalidates (ETag) so a new version of the page is never mixed with old scripts
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@router.api_route("/", methods=["GET", "HEAD"])
def index() -> FileResponse:
    return _file("index.html")


@router.api_route("/page/{name}", methods=["GET", "HEAD"])
def asset(name: str) -> FileResponse:
    return _file(name)
