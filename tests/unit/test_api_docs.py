"""/docs without the internet (shared/platform/api_docs.py): the page names only the service's own files,
starts Swagger UI without an inline script, and is sent with the policy that allows no other; the icon."""
import re

import httpx
from fastapi import FastAPI

from shared.platform.api_docs import install_api_docs
from shared.platform.webui import WebUi, install_web_ui


def client() -> httpx.AsyncClient:
    app = FastAPI(title="Lead Partner", docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    install_api_docs(app)
    install_web_ui(app, WebUi("Lead Partner", [], None), home="/tickets")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lead")


async def test_the_docs_page_loads_only_the_services_own_files_and_has_no_inline_script():
    async with client() as http:
        page = await http.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert sources and all(source.startswith("/") and not source.startswith("//") for source in sources)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert [attributes for attributes, body in scripts if "src=" not in attributes or body.strip()] == []
    assert "/openapi.json" in page.text


async def test_the_docs_page_is_sent_with_a_policy_allowing_only_the_services_own_scripts_and_styles():
    async with client() as http:
        policy = (await http.get("/docs")).headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"


async def test_every_file_the_docs_page_names_is_served_and_nothing_else_of_the_package():
    async with client() as http:
        named = re.findall(r'(?:src|href)="(/docs/[^"]*)"', (await http.get("/docs")).text)
        answers = {source: await http.get(source) for source in named}
        licence = await http.get("/docs/LICENSE")
        editor, redoc = await http.get("/docs/swagger-editor-bundle.js"), await http.get("/redoc")
    assert len(answers) == 3
    for source, answer in answers.items():
        assert answer.status_code == 200, source
        assert answer.headers["content-type"].startswith(("text/javascript", "text/css")), source
    assert licence.text.lstrip().startswith("Apache License")
    assert editor.status_code == 404 and redoc.status_code == 404


async def test_swagger_ui_is_told_not_to_show_the_online_validator_badge():
    # The badge is an image from validator.swagger.io: the document's URL would leave the building.
    async with client() as http:
        assert "&quot;validatorUrl&quot;: null" in (await http.get("/docs")).text


async def test_favicon_ico_is_an_icon():
    async with client() as http:
        icon = await http.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00" and len(icon.content) < 2048
