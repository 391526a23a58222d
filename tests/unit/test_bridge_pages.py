"""The bridge's pages without a server: a token without the 'links' permission is refused in words,
and what the page shows is escaped."""
from types import SimpleNamespace

from services.sync_bridge import pages
from shared.platform.webui import Viewer, WebUi


def _request():
    ui = WebUi("Sync bridge", [pages.TEMPLATES], "secret")
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(web_ui=ui)))


def test_a_token_without_the_links_permission_gets_a_403_page_in_words():
    answer = pages.refused(_request(), Viewer("<b>intern</b>", frozenset({"tickets"}), "csrf"))
    assert answer is not None and answer.status_code == 403
    html = answer.body.decode()
    assert "lacks the &#39;links&#39; permission" in html and "&lt;b&gt;intern&lt;/b&gt;" in html
    assert "<b>intern</b>" not in html
    assert "default-src 'self'" in answer.headers["content-security-policy"]


def test_an_operator_token_is_let_through():
    assert pages.refused(_request(), Viewer("operator", frozenset({"links"}), "csrf")) is None
