"""The interactive API docs, served offline: Swagger UI at `/docs`, ReDoc at `/redoc`.

The JavaScript and CSS come from the `fastapi-offline` package (Swagger UI, Apache-2.0; ReDoc,
MIT; the package itself is MIT) and are served by this app under `/docs/assets/`, so the pages
work on a network without internet access and reference no other host. The served bundle's
name, version and labels come from `bundle.json`, a file that may come from elsewhere: the page
titles are HTML-escaped, Swagger UI sanitises the descriptions it renders, and ReDoc is told the
schema is untrusted, so it sanitises them too.
"""

from __future__ import annotations

import html
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from mlfactory.bundle import BundleMeta

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs/assets"
# The only files served from ASSETS_DIR, with their media types: nothing else is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# Swagger UI would otherwise ask validator.swagger.io to check the schema.
SWAGGER_PARAMETERS = {"validatorUrl": None}
REDOC_PAGE = """<!DOCTYPE html>
<html>
<head>
<title>{title}</title>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="shortcut icon" href="{favicon}">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<noscript>ReDoc needs JavaScript to show the documentation.</noscript>
<redoc spec-url="{openapi}" untrusted-spec="true"></redoc>
<script src="{script}"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


def show_model(app: FastAPI, meta: BundleMeta) -> None:
    """Title, version and description of the OpenAPI schema for the served bundle.

    Called when the app is created and after every reload: the schema is rebuilt on the next
    request for it, so `info.version` always names the model that answers.
    """
    app.title = f"mlfactory — {meta.name}"
    app.version = meta.version
    app.description = f"Classifies {meta.modality} inputs into: {', '.join(meta.labels)}."
    app.openapi_schema = None


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this server's OpenAPI schema."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=html.escape(f"{request.app.title} - Swagger UI"),
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc on this server's OpenAPI schema."""
    root = request.scope.get("root_path", "")
    page = REDOC_PAGE.format(
        title=html.escape(f"{request.app.title} - ReDoc"),
        favicon=html.escape(f"{root}{ASSETS_PATH}/favicon.png"),
        openapi=html.escape(f"{root}{request.app.openapi_url}"),
        script=html.escape(f"{root}{ASSETS_PATH}/redoc.standalone.js"),
    )
    return HTMLResponse(page)


@router.api_route(ASSETS_PATH + "/{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> FileResponse:
    """One of the docs pages' script, style sheet or icon files."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "Not Found")
    return FileResponse(ASSETS_DIR / name, media_type=media_type)
