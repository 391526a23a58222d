"""The statement an insourcing partner bills one link by (SPEC section 12): one pure function from the
link's terms and the partner's own items to lines, totals and warnings, every amount an exact decimal
rounded half-up to the cent, the total the sum of the lines; and its canonical JSON and SHA-256, which
both companies store, show and approve by."""
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
ZERO = Decimal(0)


@dataclass(frozen=True)
class BilledItem:
    """An item of the insourcing partner's ticket as the statement sees it."""

    item_id: str
    kind: str  # time_entry or charge; anything else is not billed
    fields: Mapping[str, Any]
    shared: bool = True  # it crossed to the lead
    delivered: bool = True  # the lead confirmed it holds this version
    internal: bool = False


def money(value: Decimal) -> str:
    """An amount as the statement writes it: two places, rounded half-up."""
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else ZERO


def statement(terms: Mapping[str, Any] | None, items: Iterable[BilledItem], version: int = 1) -> dict[str, Any]:
    """What the partner bills for the link: its own shared, delivered, non-internal time entries and
    charges, priced by the terms. Hourly: a line per time entry at hours × rate. Flat: one line for the
    flat rate, the time entries listed at 0. Non-billable items at 0. Without terms, labor is unpriced."""
    terms = terms or {}
    rate_type, rate = terms.get("rate_type"), _decimal(terms.get("rate"))
    currency = terms.get("currency")
    billed = [i for i in items if i.shared and i.delivered and not i.internal]
    lines: list[dict[str, Any]] = []
    if rate_type == "flat":
        lines.append({"kind": "flat", "description": "Flat rate", "amount": money(rate)})
    hours_logged = ZERO
    for item in billed:
        f = item.fields
        if item.kind == "time_entry":
            hours = _decimal(f.get("hours"))
            hours_logged += hours
            priced = rate_type == "hourly" and f.get("billable", True)
            line_rate = rate if priced else ZERO
            lines.append({"kind": "time_entry", "item_id": item.item_id, "resource": f.get("resource", ""),
                          "date_worked": str(f.get("date_worked", "")), "hours": money(hours),
                          "billable": bool(f.get("billable", True)), "rate": money(line_rate),
                          "amount": money(hours * line_rate)})
        elif item.kind == "charge":
            quantity, unit_price = _decimal(f.get("quantity")), _decimal(f.get("unit_price"))
            billable = bool(f.get("billable", True))
            lines.append({"kind": "charge", "item_id": item.item_id, "name": f.get("name", ""),
                          "quantity": str(quantity.normalize()), "unit_price": str(unit_price),
                          "billable": billable, "amount": money(quantity * unit_price if billable else ZERO)})
    labor = sum((Decimal(line["amount"]) for line in lines if line["kind"] != "charge"), ZERO)
    charges = sum((Decimal(line["amount"]) for line in lines if line["kind"] == "charge"), ZERO)
    total = labor + charges
    warnings = []
    if not rate_type:
        warnings.append("no terms were agreed: labor is not priced")
    if terms.get("authorized_hours") is not None and hours_logged > _decimal(terms["authorized_hours"]):
        warnings.append(f"{money(hours_logged)} h logged, over the {money(_decimal(terms['authorized_hours']))} h"
                        " authorized")
    if terms.get("authorized_charge") is not None and total > _decimal(terms["authorized_charge"]):
        unit = f" {currency}" if currency else ""
        warnings.append(f"the total {money(total)}{unit} is over the {money(_decimal(terms['authorized_charge']))}{unit}"
                        " authorized")
    return {"version": version, "currency": currency, "rate_type": rate_type, "rate": money(rate), "lines": lines,
            "totals": {"labor": money(labor), "charges": money(charges), "total": money(total),
                       "hours": money(hours_logged)},
            "warnings": warnings}


def canonical(statement_: Mapping[str, Any]) -> bytes:
    """The statement's one spelling: sorted keys, no whitespace, UTF-8. Both sides hash this."""
    return json.dumps(statement_, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(statement_: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(statement_)).hexdigest()


class BadStatement(ValueError):
    """A statement received from the other side that is not one this function could have made."""


def _amount(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise BadStatement(f"{where} is not a decimal string")
    try:
        amount = Decimal(value)
    except Exception:
        raise BadStatement(f"{where} is not a decimal: {value[:40]!r}") from None
    if not amount.is_finite() or money(amount) != value:
        raise BadStatement(f"{where} is not an amount with two places: {value[:40]!r}")
    return amount


def checked(body: Any, *, version: int | None = None, terms: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A statement received from the other company, checked before it is stored: its shape, every
    amount two places, the totals the sums of its lines, the version the one expected and, when
    this side has the terms, their currency and rate. BadStatement names what is wrong."""
    if not isinstance(body, dict):
        raise BadStatement("the statement is not an object")
    got = body.get("version")
    if not isinstance(got, int) or isinstance(got, bool) or got < 1:
        raise BadStatement("the statement has no version (a whole number from 1)")
    if version is not None and got != version:
        raise BadStatement(f"the statement is version {got}, expected version {version}")
    lines, totals = body.get("lines"), body.get("totals")
    if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
        raise BadStatement("the statement's lines are not a list of objects")
    if not isinstance(totals, dict) or not isinstance(body.get("warnings", []), list):
        raise BadStatement("the statement has no totals (or its warnings are not a list)")
    labor = sum((_amount(line.get("amount"), f"line {n} amount") for n, line in enumerate(lines, 1)
                 if line.get("kind") != "charge"), ZERO)
    charges = sum((_amount(line.get("amount"), f"line {n} amount") for n, line in enumerate(lines, 1)
                   if line.get("kind") == "charge"), ZERO)
    for name, expected in (("labor", labor), ("charges", charges), ("total", labor + charges)):
        if _amount(totals.get(name), f"totals.{name}") != expected:
            raise BadStatement(f"totals.{name} is {totals.get(name)}, but its lines make {money(expected)}")
    _amount(totals.get("hours", "0.00"), "totals.hours")
    currency = body.get("currency")
    if currency is not None and not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise BadStatement("the statement's currency is not an ISO 4217 code")
    if terms:
        if terms.get("currency") and currency != terms["currency"]:
            raise BadStatement(f"the statement is in {currency}, the terms in {terms['currency']}")
        if terms.get("rate_type") and body.get("rate_type") != terms["rate_type"]:
            raise BadStatement(f"the statement is {body.get('rate_type')}, the terms {terms['rate_type']}")
        if terms.get("rate") is not None and _amount(body.get("rate"), "rate") != Decimal(money(_decimal(terms["rate"]))):
            raise BadStatement(f"the statement's rate is {body.get('rate')}, the terms' {money(_decimal(terms['rate']))}")
    return body
