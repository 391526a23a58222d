"""The bridge's pages without a server: a token without the 'links' permission is refused in words,
what the page shows is escaped, and the operator reads names, ticket numbers and times with their zone."""
import asyncio
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services.sync_bridge import pages
from services.sync_bridge.endpoints import BacklogOut, LinkBacklogOut, LinkHealthOut, RepairsOut, SideHealthOut, find_links
from services.sync_bridge.models import Link
from shared.platform.inbox import DeadLetter
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


# --- what the operator reads: names and numbers, times with their zone, quiet zeros, confirmations ----

CREATED = datetime(2026, 12, 7, 9, 30, 5, tzinfo=UTC)
NAMES = {"lead-partner": "Acme Repairs", "insourcing-partner": "Initech Field Services"}


def _link(**values) -> Link:
    return Link(**{"id": "3f0c9a52-1111-4222-8333-444455556666", "state": "active", "lead_partner_id": "lead-partner",
                   "lead_ticket_id": "a" * 36, "lead_ticket_number": "T20261207.0001",
                   "insourcing_partner_id": "insourcing-partner", "insourcing_ticket_id": "b" * 36,
                   "insourcing_ticket_number": "T20261207.0042", "created_at": CREATED,
                   "last_event_at": CREATED + timedelta(minutes=5), "in_sync": True, "repairs": 0,
                   "last_reconciled_at": None, "lead_health": None, "insourcing_health": None} | values)


def _name(partner_id: str) -> str:
    return NAMES.get(partner_id, partner_id)


def _links_page(links: list[Link], **context) -> str:
    context = {"state": "", "states": pages.LINK_STATES, "q": "", "paged": False, "next_cursor": None,
               "backlog": BacklogOut(waiting=0, partitions=[], links=[]), "waiting": {},
               "partner_name": _name} | context
    return pages.render(_request(), OPERATOR, "links.html", links=links, **context).body.decode()


def _link_page(link: Link, refused: int = 0) -> str:
    health = LinkHealthOut(
        link_id=link.id, link_state=link.state, in_sync=True, last_reconciled_at=None, reconciling=False,
        lead=SideHealthOut(partner_id=link.lead_partner_id, ticket_id=link.lead_ticket_id, status="In Progress",
                           pending=0, delivered=3, refused=0, oldest_pending_at=None, last_sent_at=CREATED,
                           last_received_at=None),
        insourcing=SideHealthOut(partner_id=link.insourcing_partner_id, ticket_id=link.insourcing_ticket_id,
                                 status="In Progress", pending=2, delivered=0, refused=refused,
                                 oldest_pending_at=None, last_sent_at=None, last_received_at=None),
        repairs=RepairsOut(count=0, last_at=None, recent=[]))
    return pages.render(_request(), OPERATOR, "link.html", link=link, health=health, mirrors=[], started=False,
                        partner_name=_name).body.decode()


OPERATOR = Viewer("operator", frozenset({"links", "partners"}), "csrf")


def test_the_links_page_names_both_partners_and_both_ticket_numbers_with_times_in_utc():
    html = _links_page([_link(), _link(id="9" * 36, insourcing_ticket_id=None, insourcing_ticket_number=None,
                                       insourcing_partner_id="gone-partner", state="pending")])
    row = html.split('id="link-3f0c9a52')[1].split("</tr>")[0]
    for shown in ("Acme Repairs", "Initech Field Services", '<span class="number">T20261207.0001</span>',
                  '<span class="number">T20261207.0042</span>', "2026-12-07", "09:30:05 UTC</span>", "09:35:05 UTC</span>"):
        assert shown in row, shown
    pending = html.split(f'id="link-{"9" * 36}')[1].split("</tr>")[0]
    assert "gone-partner" in pending and "not accepted" in pending  # a partner the directory lacks: its id
    assert '<link rel="stylesheet" href="/bridge.css">' in html and 'class="words"' in html


def test_the_backlog_names_a_waiting_link_by_its_ticket_numbers():
    waiting = LinkBacklogOut(link_id=_link().id, link_state="active", lead_pending=3, insourcing_pending=0,
                             oldest_pending_at=CREATED, reported_at=CREATED)
    html = _links_page([], backlog=BacklogOut(waiting=0, partitions=[], links=[waiting]), waiting={_link().id: _link()})
    assert f'<a href="/links/{_link().id}">T20261207.0001 → T20261207.0042</a>: lead 3, insourcing 0 pending' in html


def test_a_search_says_what_it_looked_for_and_pages_keep_it():
    html = _links_page([_link()], q="T20261207.00", next_cursor="123_abc")
    assert "1+ link found for" in html and "T20261207.00" in html
    assert 'href="/links?state=&amp;q=T20261207.00&amp;cursor=123_abc">Older links' in html
    assert "No links with a ticket number or id matching T9" in _links_page([], q="T9")


def test_zero_counts_are_quiet_and_only_a_problem_that_happened_is_red():
    quiet = _link_page(_link())
    assert '<span class="badge zero">0 refused</span>' in quiet and '<span class="badge zero">0 pending</span>' in quiet
    assert '<span class="badge pending">2 pending</span>' in quiet and 'class="badge refused"' not in quiet
    assert '<span class="badge refused">4 refused</span>' in _link_page(_link(), refused=4)


def test_the_link_page_names_the_partners_and_the_ticket_numbers_of_both_sides():
    html = _link_page(_link())
    assert "Lead side: Acme Repairs" in html and "Insourcing side: Initech Field Services" in html
    assert "T20261207.0001" in html and "T20261207.0042" in html and "09:30:05 UTC" in html


def test_every_action_that_cannot_be_undone_asks_first():
    letter = DeadLetter(id=7, topic="psa.lead-partner.outbound", partition=0, offset=3, key=b"k", event_id=None,
                        type=None, reason="not an envelope", parked_at=CREATED, resolved_at=None,
                        value=b"{", size=1, truncated=False, sha256="0" * 64)
    letters = pages.render(_request(), OPERATOR, "dead_letters.html", letters=[letter], include_resolved=False,
                           outcome=None, error=None, max_rows=200).body.decode()
    assert re.search(r'action="/dead-letters/7/discard" class="inline"\s+data-confirm="Discard dead letter 7\?', letters)
    assert not re.search(r'action="/dead-letters/7/replay"[^>]*data-confirm', letters)  # replaying changes nothing by itself
    partner = SimpleNamespace(id="acme", name="Acme Repairs", role="lead", status="active", source="api",
                              removed_at=None, created_at=CREATED)
    directory = pages.render(_request(), OPERATOR, "partners.html", partners=[partner], outcome=None, error=None,
                             onboarded=None, bundle=None, form={}).body.decode()
    for action, question in (("rotate", "Rotate the keys of Acme Repairs?"), ("remove", "Remove Acme Repairs?")):
        assert re.search(rf'action="/partners/acme/{action}" class="inline"\s+data-confirm="{re.escape(question)}',
                         directory), action


def test_a_search_for_a_nul_finds_nothing_rather_than_failing():
    # No ticket number or link id holds one, and PostgreSQL text cannot: answered before the database.
    assert asyncio.run(find_links(None, None, "T2026\x00", 100, None)) == ([], None)
