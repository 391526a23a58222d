"""Billing the lead partner (SPEC section 12), end to end: the insourcing partner's receivables list what
the lead approved and it has not invoiced yet, with totals per lead partner and currency to the cent;
its invoice crosses Kafka and the lead's payables show it; both lists export every row as CSV with
formula text quoted; both UIs have a Billing page with an Export CSV that works with the page's
session; a ticket page prints as a clean statement."""
import asyncio
import csv
import io
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from playwright.async_api import expect

from shared.partner_pages import money
from tests.e2e.flows import approve, insource_status, linked_tickets, outsource_status
from tests.e2e.test_statement import log
from tests.e2e.test_web_ui import shot, signed_in
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
TERMS = {"rate_type": "hourly", "rate": "95.00", "currency": "EUR"}
TOTAL = "277.48"  # 2.50 h at 95.00 and 2 × 19.99
RECEIVABLE_COLUMNS = ["link_id", "lead_partner_id", "lead_partner", "lead_ticket_number", "ticket_id", "ticket_number",
                      "title", "statement_version", "statement_sha256", "settled", "settled_at", "currency", "labor",
                      "charges", "total"]
PAYABLE_COLUMNS = ["link_id", "partner_id", "partner", "partner_ticket_number", "ticket_id", "ticket_number", "title",
                   "statement_version", "statement_sha256", "settled", "settled_at", "currency", "labor", "charges",
                   "total", "invoice_number", "invoiced_at"]


def unique(title: str) -> str:
    return f"{title} {uuid.uuid4().hex[:8]}"


async def approved_work(lead, insourcing, title: str) -> dict:
    """Outsourced with hourly terms in EUR, accepted, 2.50 h and a charge logged, Insource Complete,
    approved by the lead: Complete on both sides."""
    lead_ticket, insourced, link_id = await linked_tickets(lead, insourcing, title=title, terms=TERMS)
    insourced_id = insourced["id"]
    await log(insourcing, insourced_id, "time-entries", hours="2.50", resource="Ana", date_worked="2026-12-07",
              summary="Swapped the batteries")
    await log(insourcing, insourced_id, "charges", name="Battery", quantity="2", unit_price="19.99")
    assert (await insourcing.post(f"/api/tickets/{insourced_id}/insource/complete")).status_code == 200
    await outsource_status(lead, lead_ticket["id"], "Waiting Approval")
    approved = await approve(lead, lead_ticket["id"])
    assert approved.status_code == 200, approved.text
    await insource_status(insourcing, insourced_id, "Complete")
    statement = (await insourcing.get(f"/api/tickets/{insourced_id}/statement")).json()
    assert statement["statement"]["totals"]["total"] == TOTAL and statement["settled"] == "approved"
    return {"lead_ticket": lead_ticket, "insourced_id": insourced_id, "link_id": link_id, "title": title,
            "sha256": statement["sha256"]}


async def report(client, path: str, **params) -> tuple[list[dict], list[dict]]:
    """Every row of a billing list, page after page, and its totals (the same on every page: read again
    from the first page when an invoice crossing meanwhile changed them)."""
    for _ in range(10):
        rows, cursor, totals = [], None, None
        while True:
            answer = await client.get(path, params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            if totals is not None and page["totals"] != totals:
                break  # changed while paging: again, from the start
            rows += page["items"]
            totals = page["totals"]
            if (cursor := page["next_cursor"]) is None:
                return rows, totals
        await asyncio.sleep(0.2)
    raise AssertionError(f"the totals of {path} kept changing while it was read")


def sums(rows: list[dict], partner_id: str, *amounts: str) -> dict[tuple, list]:
    """Per (partner id, currency): [count, sum of each amount column]."""
    found = defaultdict(lambda: [0] + [Decimal(0)] * len(amounts))
    for row in rows:
        group = found[row[partner_id], row["currency"] or None]
        group[0] += 1
        for i, amount in enumerate(amounts, 1):
            group[i] += Decimal(row[amount]) if row[amount] else Decimal(0)
    return found


def in_row(rows: list[dict], link_id: str) -> dict | None:
    return next((row for row in rows if row["link_id"] == link_id), None)


async def lead_sees_invoice(lead, link_id: str, number: str) -> dict:
    async def check():
        row = in_row((await report(lead, "/api/billing/payables", invoiced="true"))[0], link_id)
        return row if row and row["invoice_number"] == number else None

    return await eventually(check, timeout=30)


def parsed(answer, name: str) -> list[dict]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    today = datetime.now(UTC).date().isoformat()
    assert answer.headers["content-disposition"] == f'attachment; filename="{name}-{today}.csv"'
    return list(csv.DictReader(io.StringIO(answer.text, newline="")))


@pytest.mark.broker  # also on Tansu
async def test_receivables_list_approved_work_until_invoiced_then_the_lead_sees_the_invoice_in_its_payables(
        lead, insourcing):
    work = await approved_work(lead, insourcing, unique("Billing: replace the UPS batteries"))
    link_id = work["link_id"]

    rows, totals = await report(insourcing, "/api/billing/receivables")
    mine = in_row(rows, link_id)
    assert mine is not None, "the approved work is not among the receivables"
    assert (mine["total"], mine["labor"], mine["charges"], mine["currency"]) == (TOTAL, "237.50", "39.98", "EUR")
    assert (mine["statement_version"], mine["statement_sha256"], mine["settled"]) == (1, work["sha256"], "approved")
    assert (mine["title"], mine["ticket_id"], mine["lead_ticket_number"]) == (
        work["title"], work["insourced_id"], work["lead_ticket"]["number"])
    # Newest settled first; the totals are the exact sums of every row listed, per lead partner and currency.
    assert [r["settled_at"] for r in rows] == sorted((r["settled_at"] for r in rows), reverse=True)
    listed = sums(rows, "lead_partner_id", "total")
    assert {(t["lead_partner_id"], t["currency"]): [t["count"], Decimal(t["total"])] for t in totals} == listed
    group = next(t for t in totals if (t["lead_partner_id"], t["currency"]) == (mine["lead_partner_id"], "EUR"))
    assert Decimal(group["total"]) >= Decimal(TOTAL) and len(group["total"].split(".")[1]) == 2
    assert group["lead_partner"] == mine["lead_partner"]

    invoiced = await insourcing.post(f"/api/received-work/{link_id}/invoice", json={"invoice_number": "INV-1"})
    assert invoiced.status_code == 200, invoiced.text
    assert (invoiced.json()["total"], invoiced.json()["invoice_number"]) == (TOTAL, "INV-1")
    rows_after, totals_after = await report(insourcing, "/api/billing/receivables")
    assert in_row(rows_after, link_id) is None
    left = next((t for t in totals_after if (t["lead_partner_id"], t["currency"]) == (mine["lead_partner_id"], "EUR")), None)
    assert Decimal(left["total"] if left else 0) == Decimal(group["total"]) - Decimal(TOTAL)

    payable = await lead_sees_invoice(lead, link_id, "INV-1")
    assert (payable["total"], payable["currency"], payable["statement_sha256"]) == (TOTAL, "EUR", work["sha256"])
    assert (payable["ticket_id"], payable["ticket_number"], payable["title"]) == (
        work["lead_ticket"]["id"], work["lead_ticket"]["number"], work["title"])
    assert payable["partner_id"] == "insourcing-partner" and payable["invoiced_at"]
    everything, lead_totals = await report(lead, "/api/billing/payables")
    assert in_row(everything, link_id)["invoice_number"] == "INV-1"
    assert in_row((await report(lead, "/api/billing/payables", invoiced="false"))[0], link_id) is None
    for t in lead_totals:
        assert Decimal(t["total"]) == Decimal(t["invoiced"]) + Decimal(t["open"])
    listed = sums(everything, "partner_id", "total")
    assert {(t["partner_id"], t["currency"]): [t["count"], Decimal(t["total"])] for t in lead_totals} == listed
    invoiced_sums = sums([r for r in everything if r["invoice_number"]], "partner_id", "total")
    for t in lead_totals:
        assert Decimal(t["invoiced"]) == invoiced_sums.get((t["partner_id"], t["currency"]), [0, Decimal(0)])[1]

    # The invoice is given once: the same number again is answered as before, another number refused.
    again = await insourcing.post(f"/api/received-work/{link_id}/invoice", json={"invoice_number": "INV-1"})
    assert again.status_code == 200 and again.json()["invoiced_at"] == invoiced.json()["invoiced_at"]
    other = await insourcing.post(f"/api/received-work/{link_id}/invoice", json={"invoice_number": "INV-2"})
    assert other.status_code == 409 and "INV-1" in other.json()["detail"]


async def test_work_not_complete_cannot_be_invoiced_and_is_not_receivable(lead, insourcing):
    _, _, link_id = await linked_tickets(lead, insourcing, title=unique("Billing: still in progress"))
    refused = await insourcing.post(f"/api/received-work/{link_id}/invoice", json={"invoice_number": "INV-1"})
    assert refused.status_code == 409, refused.text
    assert in_row((await report(insourcing, "/api/billing/receivables"))[0], link_id) is None
    assert in_row((await report(lead, "/api/billing/payables"))[0], link_id) is None


@pytest.mark.broker  # also on Tansu
async def test_both_lists_export_every_row_as_csv_and_text_a_spreadsheet_would_run_starts_with_a_quote(
        lead, insourcing):
    title = unique('=HYPERLINK("http://attacker.invalid","Billing")')
    work = await approved_work(lead, insourcing, title)
    link_id = work["link_id"]

    rows, totals = await report(insourcing, "/api/billing/receivables")
    exported = parsed(await insourcing.get("/api/billing/receivables", params={"format": "csv", "limit": 1}),
                      "receivables")
    assert list(exported[0]) == RECEIVABLE_COLUMNS
    assert [r["link_id"] for r in exported] == [r["link_id"] for r in rows]  # every row, not one page
    mine = in_row(exported, link_id)
    assert mine["title"] == "'" + title  # quoted, and otherwise intact
    assert (mine["total"], mine["labor"], mine["charges"], mine["currency"]) == (TOTAL, "237.50", "39.98", "EUR")
    settled_at = datetime.fromisoformat(mine["settled_at"])
    assert mine["settled_at"].endswith("Z") and settled_at.utcoffset().total_seconds() == 0
    assert all(len(r["total"].split(".")[1]) == 2 for r in exported)
    from_csv = sums(exported, "lead_partner_id", "total")
    assert {(t["lead_partner_id"], t["currency"]): [t["count"], Decimal(t["total"])] for t in totals} == from_csv

    invoice = await insourcing.post(f"/api/received-work/{link_id}/invoice", json={"invoice_number": "=INV-1"})
    assert invoice.status_code == 200, invoice.text
    await lead_sees_invoice(lead, link_id, "=INV-1")
    answer = await lead.get("/api/billing/payables", params={"format": "csv", "invoiced": "true"})
    exported = parsed(answer, "payables")
    assert list(exported[0]) == PAYABLE_COLUMNS
    mine = in_row(exported, link_id)
    assert (mine["title"], mine["invoice_number"], mine["total"]) == ("'" + title, "'=INV-1", TOTAL)
    assert mine["invoiced_at"].endswith("Z") and mine["partner_ticket_number"]
    assert all(r["invoice_number"] for r in exported)
    _, lead_totals = await report(lead, "/api/billing/payables", invoiced="true")
    from_csv = sums(exported, "partner_id", "total")
    assert {(t["partner_id"], t["currency"]): [t["count"], Decimal(t["total"])] for t in lead_totals} == from_csv


async def test_the_csv_format_is_in_the_openapi_document(lead, insourcing):
    for client, path in ((insourcing, "/api/billing/receivables"), (lead, "/api/billing/payables")):
        operation = (await client.get("/openapi.json")).json()["paths"][path]["get"]
        chosen = next(p for p in operation["parameters"] if p["name"] == "format")
        assert chosen["schema"]["enum"] == ["json", "csv"]
        assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}


async def test_the_billing_pages_show_totals_and_statements_and_export_csv_with_the_pages_session(
        browser, services, lead, insourcing):
    work = await approved_work(lead, insourcing, unique("Billing page: the generator's service"))
    link_id, shown_total = work["link_id"], money(TOTAL, "EUR")

    # The insourcing partner's page: the totals first, then the statement it has not invoiced yet.
    _, totals = await report(insourcing, "/api/billing/receivables")
    partner = await signed_in(browser, services["insourcing_partner"])
    await partner.get_by_role("link", name="Billing", exact=True).click()
    await expect(partner.get_by_role("heading", level=1)).to_have_text("Billing: receivables")
    owed = partner.get_by_test_id("billing-totals").locator("tbody tr")
    for t in totals:
        await expect(owed.filter(has_text=t["lead_partner"]).filter(has_text=money(t["total"], t["currency"]))).to_have_count(1)
    row = partner.locator(f"#statement-{link_id}")
    await expect(row.get_by_test_id("billing-total")).to_have_text(shown_total)
    await expect(row.get_by_role("link")).to_have_attribute("href", f"/tickets/{work['insourced_id']}")
    async with partner.expect_download() as download_info:
        await partner.get_by_role("link", name="Export CSV").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("receivables-")
    exported = list(csv.DictReader(io.StringIO(open(await download.path(), encoding="utf-8").read(), newline="")))
    assert in_row(exported, link_id)["total"] == TOTAL
    await shot(partner, "insourcing-billing")

    # Mark invoiced on the row: it leaves the receivables; a blank number is refused by the browser first.
    await row.get_by_label("Invoice number").fill("INV-1")
    await row.get_by_role("button", name="Mark invoiced").click()
    await expect(partner.locator(f"#statement-{link_id}")).to_have_count(0)
    await lead_sees_invoice(lead, link_id, "INV-1")

    # Invoiced: the lead's page, filtered to what was invoiced, shows the number beside the total.
    page = await signed_in(browser, services["lead_partner"])
    await page.get_by_role("link", name="Billing", exact=True).click()
    await page.get_by_role("link", name="Invoiced", exact=True).click()
    row = page.locator(f"#statement-{link_id}")
    await expect(row.get_by_test_id("billing-total")).to_have_text(shown_total)
    await expect(row.get_by_test_id("billing-invoice")).to_contain_text("INV-1")
    await expect(page.get_by_test_id("billing-totals")).to_contain_text("EUR")
    await shot(page, "lead-billing")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Export CSV").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("payables-")
    exported = list(csv.DictReader(io.StringIO(open(await download.path(), encoding="utf-8").read(), newline="")))
    assert in_row(exported, link_id)["invoice_number"] == "INV-1" and all(r["invoice_number"] for r in exported)

    # The ticket prints as a clean statement: no navigation or forms, the statement open.
    await row.get_by_role("link", name=work["lead_ticket"]["number"]).click()
    statement = page.get_by_test_id("statement")
    await expect(statement.get_by_role("cell", name="Total")).to_be_hidden()  # folded on screen
    await page.emulate_media(media="print")
    await expect(statement.locator("tfoot")).to_be_visible()
    await expect(statement.locator("tfoot")).to_contain_text(shown_total)
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    await expect(page.get_by_role("button", name="Add note")).to_be_hidden()
    await shot(page, "ticket-printed")
