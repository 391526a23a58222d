"""The web UI shell every service shares (SPEC section 8): sign-in with an API token into a signed,
HttpOnly, SameSite=Strict session cookie; a CSRF token on every form that changes something; a
Content-Security-Policy that allows only the service's own scripts and styles; Jinja2 templates
that escape everything a user typed; the service's own static assets (no CDN, no external font)."""
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from markupsafe import escape
from sqlalchemy import select

from shared.platform.auth import ApiToken, SessionDep, hash_token

HERE = Path(__file__).resolve().parent
SESSION_SECONDS = 12 * 3600  # a working day; signing in again after that
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class Viewer:
    """The signed-in user: the API token's name and permissions, and the session's CSRF token."""

    name: str
    permissions: frozenset[str]
    csrf: str
    token_sha256: str = ""  # the token signed in with: unique, where a name may be given twice

    def may(self, permission: str) -> bool:
        return permission in self.permissions


class FormRefused(Exception):
    """A form the service will not take (a forged one): answered with a page in words."""


class SignInNeeded(Exception):
    """Raised by a page dependency when there is no valid session: the answer is the sign-in page."""


class WebUi:
    """One service's UI: its title, its templates, its session secret."""

    def __init__(self, title: str, template_dirs: list[Path], secret: str | None):
        self.title = title
        # Browsers keep cookies per host, not per port: each service's own name, so that signing in to
        # one service on a host does not sign its user out of another on the same host.
        # The name is ASCII whatever the title (a cookie's name must be), with the title's hash: two partners
        # whose names read alike do not share one.
        slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in title.lower()).strip("-")[:40]
        self.cookie = f"session-{slug or 'ui'}-{hashlib.sha256(title.encode()).hexdigest()[:8]}"
        # Without a configured secret sessions last until the process restarts (replicas need one).
        self.secret = (secret or secrets.token_urlsafe(32)).encode()
        self.templates = Environment(
            loader=ChoiceLoader([FileSystemLoader(str(d)) for d in [*template_dirs, HERE / "templates"]]),
            autoescape=select_autoescape(["html"], default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # --- the session cookie ---------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, token_digest: str) -> str:
        body = f"{token_digest}.{int(time.time())}"
        return f"{body}.{self._sign(body)}"

    def digest_from(self, cookie: str | None) -> str | None:
        if not cookie or cookie.count(".") != 2:
            return None
        digest, issued, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{digest}.{issued}")):
            return None
        if not issued.isdigit() or time.time() - int(issued) > SESSION_SECONDS:
            return None
        return digest

    def csrf_for(self, digest: str) -> str:
        return self._sign(f"csrf:{digest}")

    # --- pages ----------------------------------------------------------------------------------

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(request=request, title=self.title, **context)
        return HTMLResponse(html, status_code=status_code, headers=page_headers())


def page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def ui_of(request: Request) -> WebUi:
    return request.app.state.web_ui


async def viewer(request: Request, session: SessionDep) -> Viewer:
    """The signed-in user, or SignInNeeded. A revoked token ends its sessions at once."""
    ui = ui_of(request)
    digest = ui.digest_from(request.cookies.get(ui.cookie))
    if digest is None:
        raise SignInNeeded()
    row = await session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None)))
    if row is None:
        raise SignInNeeded()
    return Viewer(row.name, frozenset(row.permissions), ui.csrf_for(digest), digest)


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def changing(request: Request, who: ViewerDep, csrf: Annotated[str, Form()] = "") -> Viewer:
    """A signed-in user submitting a form of this service's own pages (CSRF token checked)."""
    if not hmac.compare_digest(csrf, who.csrf):
        raise FormRefused("this form did not come from this service's own page (CSRF token missing or wrong); "
                          "reload the page and try again")
    return who


ChangeDep = Annotated[Viewer, Depends(changing)]


def install_web_ui(app, ui: WebUi, home: str) -> None:
    """Sign-in and sign-out, the static assets, and the answer to a page without a session."""
    app.state.web_ui = ui
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    router = APIRouter(include_in_schema=False)

    @router.get("/favicon.ico")
    async def favicon():  # browsers ask for it whatever the page links
        return FileResponse(HERE / "static" / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded):
        if request.method == "GET" and request.headers.get("accept", "").startswith("text/event-stream"):
            return Response(status_code=401)
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)

    @app.exception_handler(FormRefused)
    async def form_refused(request: Request, exc: FormRefused):
        return HTMLResponse(f"<!doctype html><title>Refused</title><p role=\"alert\">{escape(str(exc))}</p>"
                            "<p><a href=\"/\">Home</a></p>", status_code=403, headers=page_headers())

    @router.get("/signin")
    async def signin_page(request: Request, next: str = home):
        return ui.render(request, "signin.html", next=_local(next, home), error=None)

    @router.post("/signin")
    async def signin(request: Request, session: SessionDep, token: Annotated[str, Form()] = "",
                     next: Annotated[str, Form()] = home):
        digest = hash_token(token.strip())
        row = await session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None)))
        if row is None:
            return ui.render(request, "signin.html", status_code=401, next=_local(next, home),
                             error="That API token is not valid here (unknown, revoked, or for another service).")
        answer = RedirectResponse(_local(next, home), status_code=303)
        answer.set_cookie(ui.cookie, ui.cookie_for(digest), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                          secure=request.url.scheme == "https", path="/")
        return answer

    @router.post("/signout")
    async def signout(who: ChangeDep):
        answer = RedirectResponse("/signin", status_code=303)
        answer.delete_cookie(ui.cookie, path="/")
        return answer

    app.include_router(router)


def _local(target: str, default: str) -> str:
    """Only a path on this service (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else default
