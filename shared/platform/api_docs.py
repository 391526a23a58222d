"""Interactive API docs at /docs that work without the internet and under the services' Content-Security-
Policy: Swagger UI's files come from a pinned PyPI package (swagger-ui-py, Apache-2.0) and are served by
the service itself, not from a CDN, and Swagger UI is started by the service's own script, not inline."""
import json
from html import escape
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import swagger_ui_default_parameters
from fastapi.responses import FileResponse, HTMLResponse

from shared.platform.webui import page_headers

PACKAGE = "swagger-ui-py"
SWAGGER_UI = Path(find_spec("swagger_ui").submodule_search_locations[0]) / "static"
FILES = {  # the only files /docs serves; the package also ships Swagger Editor, which is not used
    "swagger-ui-bundle.js": SWAGGER_UI / "swagger-ui-bundle.js",
    "swagger-ui.css": SWAGGER_UI / "swagger-ui.css",
    "LICENSE": SWAGGER_UI / "LICENSE",
    "api-docs.js": Path(__file__).resolve().parent / "static" / "api-docs.js",
}
PARAMETERS = {
    **swagger_ui_default_parameters,
    # Swagger UI would otherwise show a badge loaded from validator.swagger.io, which sends the
    # document's URL out of the building.
    "validatorUrl": None,
}


def install_api_docs(app: FastAPI) -> None:
    """Serves /docs for `app` (made with docs_url=None, redoc_url=None: ReDoc has no package that ships
    its files, so it is off rather than blank offline). The API takes a bearer token, which Swagger UI's
    Authorize button sends as such: no OAuth2 redirect page is needed."""
    shipped = version(PACKAGE)  # in the files' URLs, so that a browser's cached copy ends with an upgrade

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        config = {"url": app.openapi_url, **PARAMETERS}
        return HTMLResponse(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(app.title)} - Swagger UI</title>\n"
            "<link rel=\"icon\" href=\"/favicon.ico\">\n"
            f"<link rel=\"stylesheet\" href=\"/docs/swagger-ui.css?v={shipped}\">\n</head>\n<body>\n"
            f"<div id=\"swagger-ui\" data-config=\"{escape(json.dumps(config))}\"></div>\n"
            f"<script src=\"/docs/swagger-ui-bundle.js?v={shipped}\"></script>\n"
            "<script src=\"/docs/api-docs.js\"></script>\n</body>\n</html>\n",
            headers=page_headers(),
        )

    @app.get("/docs/{name}", include_in_schema=False)
    async def docs_file(name: str) -> FileResponse:
        if name not in FILES:
            raise HTTPException(404, f"/docs has no file {name!r}")
        cache = "no-cache" if name == "api-docs.js" else "public, max-age=86400"
        media_type = "text/plain; charset=utf-8" if name == "LICENSE" else None
        return FileResponse(FILES[name], media_type=media_type,
                            headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})
