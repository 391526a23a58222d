"""A list answered as a CSV file (`?format=csv`, SPEC section 12): a header row, then every matching row,
each cell written by its type. Text is guarded against formula injection: a spreadsheet runs a cell
that starts with = + - @ (or a tab or CR before one), so such text starts with a quote instead."""
import csv
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from fastapi import Query
from fastapi.responses import Response

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CENT = Decimal("0.01")

Format = Annotated[Literal["json", "csv"], Query(
    alias="format", description="json: one page; csv: every matching row as a CSV file (limit and cursor unused)")]


def responses(what: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI declaration of the CSV answer, next to the JSON one of the same 200."""
    return {200: {"description": f"{what}: a JSON page, or with format=csv a CSV file of every row",
                  "content": {"text/csv": {"schema": {"type": "string"}}}}}


def cell(value: Any) -> str:
    """Money as a Decimal (two places), times in UTC ISO 8601, text guarded."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value.quantize(CENT, rounding=ROUND_HALF_UP))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def csv_text(columns: list[str], rows: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF, quotes where a cell needs them
    writer.writerow(columns)
    writer.writerows([cell(row.get(column)) for column in columns] for row in rows)
    return out.getvalue()


def csv_response(name: str, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> Response:
    """A download named `<name>-<UTC date>.csv`."""
    filename = f"{name}-{datetime.now(UTC).date().isoformat()}.csv"
    return Response(csv_text(columns, rows), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})
