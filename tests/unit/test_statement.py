"""The statement (SPEC section 12) as pure logic: hourly and flat terms, non-billable and internal items,
rounding half-up to the cent, both warnings, and for any items the total is the sum of its lines and the
lead's copy, after crossing as JSON, hashes the same."""
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.billing import BadStatement, BilledItem, checked, money, sha256, statement

HOURLY = {"rate_type": "hourly", "rate": "95.00", "currency": "EUR", "authorized_hours": 4}


def entry(hours: str, billable: bool = True, **flags) -> BilledItem:
    return BilledItem(f"te-{hours}", "time_entry", {"resource": "Ana", "date_worked": "2026-12-07", "hours": hours,
                                                   "summary": "work", "billable": billable}, **flags)


def charge(quantity: str, unit_price: str, billable: bool = True, **flags) -> BilledItem:
    return BilledItem(f"ch-{quantity}", "charge", {"name": "PSU", "quantity": quantity, "unit_price": unit_price,
                                                   "billable": billable}, **flags)


def test_hourly_bills_hours_times_rate_and_charges_and_totals_them():
    s = statement(HOURLY, [entry("2.5"), charge("2", "19.99")])
    assert [line["amount"] for line in s["lines"]] == ["237.50", "39.98"]
    assert s["totals"] == {"labor": "237.50", "charges": "39.98", "total": "277.48", "hours": "2.50"}
    assert s["currency"] == "EUR" and s["warnings"] == []


def test_flat_bills_one_line_and_lists_the_time_at_zero():
    s = statement({"rate_type": "flat", "rate": "500", "currency": "USD"}, [entry("3"), charge("1", "10")])
    assert [(line["kind"], line["amount"]) for line in s["lines"]] == [
        ("flat", "500.00"), ("time_entry", "0.00"), ("charge", "10.00")]
    assert s["totals"]["total"] == "510.00"


def test_non_billable_at_zero_internal_unshared_and_undelivered_never_appear():
    s = statement(HOURLY, [entry("1", billable=False), charge("1", "50", billable=False),
                           entry("2", internal=True), charge("9", "9", shared=False), entry("7", delivered=False)])
    assert [line["amount"] for line in s["lines"]] == ["0.00", "0.00"]
    assert s["totals"]["total"] == "0.00" and s["totals"]["hours"] == "1.00"


def test_each_line_rounds_half_up_to_the_cent_and_the_total_is_their_sum():
    s = statement({"rate_type": "hourly", "rate": "33.33"}, [entry("0.15"), entry("0.25")])
    # 0.15 × 33.33 = 4.9995 -> 5.00; 0.25 × 33.33 = 8.3325 -> 8.33 (not 13.33 from the unrounded sum 13.332)
    assert [line["amount"] for line in s["lines"]] == ["5.00", "8.33"]
    assert s["totals"]["labor"] == "13.33"


def test_warnings_say_hours_over_authorized_and_total_over_the_authorized_charge():
    s = statement({**HOURLY, "authorized_charge": "300"}, [entry("3"), entry("1.5")])
    assert s["warnings"] == ["4.50 h logged, over the 4.00 h authorized",
                             "the total 427.50 EUR is over the 300.00 EUR authorized"]
    assert statement(None, [entry("1")])["warnings"] == ["no terms were agreed: labor is not priced"]


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999"), places=4).map(str)
items = st.lists(st.one_of(
    st.builds(lambda h, b, i: entry(h, b, internal=i),
              st.decimals(min_value=Decimal("0.01"), max_value=24, places=2).map(str), st.booleans(), st.booleans()),
    st.builds(lambda q, p, b: charge(q, p, b), amounts, amounts, st.booleans())), max_size=30)
terms = st.one_of(st.none(), st.fixed_dictionaries({
    "rate_type": st.sampled_from(["hourly", "flat"]), "rate": amounts, "currency": st.sampled_from(["USD", "EUR"])},
    optional={"authorized_hours": st.integers(1, 40), "authorized_charge": amounts}))


@given(terms=terms, billed=items)
def test_for_any_items_the_total_is_the_sum_of_the_lines_and_the_copy_that_crossed_hashes_the_same(terms, billed):
    s = statement(terms, billed, version=3)
    lines = sum(Decimal(line["amount"]) for line in s["lines"])
    assert Decimal(s["totals"]["total"]) == lines == Decimal(s["totals"]["labor"]) + Decimal(s["totals"]["charges"])
    assert all(Decimal(line["amount"]).as_tuple().exponent == -2 for line in s["lines"])
    crossed = json.loads(json.dumps(s))  # as the lead stores it from the message
    assert sha256(crossed) == sha256(s) and crossed["version"] == 3


@given(terms=terms, billed=items, tampered=st.integers(0, 29))
def test_any_statement_this_function_makes_passes_the_check_and_one_with_a_line_changed_does_not(terms, billed,
                                                                                                   tampered):
    """What the other company receives is checked (billing.checked): every statement made here passes,
    as it crossed, against the same terms; a line whose amount changed without its totals is refused."""
    crossed = json.loads(json.dumps(statement(terms, billed, version=2)))
    assert checked(crossed, version=2, terms=terms) == crossed
    if crossed["lines"]:
        line = crossed["lines"][tampered % len(crossed["lines"])]
        line["amount"] = money(Decimal(line["amount"]) + Decimal("0.01"))
        with pytest.raises(BadStatement, match="but its lines make"):
            checked(crossed, version=2, terms=terms)
