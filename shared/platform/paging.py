"""Pages of a list ordered by creation (SPEC section 5): `{items, next_cursor}`, `?limit=` up to 500,
`?cursor=` the `next_cursor` of the page before. The cursor names the last row of that page by its
creation time and id, so a row written meanwhile neither repeats nor hides one."""
import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, BaseModel, Field, create_model
from sqlalchemy import Select, and_, or_

PAGE_DEFAULT = 100
PAGE_MAX = 500
# Opaque to clients: microseconds since the epoch, then the row's id in base64url (a link id is whatever
# the lead's company made it, not always a UUID).
CURSOR_PATTERN = r"^[0-9]{1,20}_[A-Za-z0-9_-]{1,200}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_LATEST = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def _a_time(cursor: str | None) -> str | None:
    """A cursor whose time a date can hold (a made-up one may name the year 20000) and whose key decodes:
    else a 422."""
    if cursor is None:
        return None
    micros, _, encoded = cursor.partition("_")
    try:
        _decoded(encoded)
    except ValueError:
        raise ValueError("not a cursor this list gave: pass `next_cursor` as it was") from None
    if int(micros) > _LATEST:
        raise ValueError("not a cursor this list gave: pass `next_cursor` as it was")
    return cursor


def cursor_or_none(text: str) -> str | None:
    """A page's `?cursor=` as a web page takes it: a cursor this list gave, or none (the first page)."""
    try:
        return _a_time(text) if re.fullmatch(CURSOR_PATTERN, text) else None
    except ValueError:
        return None


Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="rows per page")]
Cursor = Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the page before"),
                   AfterValidator(_a_time)]


def page_of(out_model: type[BaseModel], name: str) -> type[BaseModel]:
    """`{items, next_cursor}` of `out_model`: `next_cursor` is null on the last page."""
    return create_model(
        name,
        items=(list[out_model], ...),
        next_cursor=(str | None, Field(description="pass as `cursor` for the next page; null on the last page")),
    )


def after(query: Select, created, key, cursor: str | None, newest_first: bool) -> Select:
    """`query` ordered by (created, key), from the row after `cursor`."""
    order = (created.desc(), key.desc()) if newest_first else (created.asc(), key.asc())
    query = query.order_by(*order)
    if cursor:
        micros, _, encoded = cursor.partition("_")
        at, last = _EPOCH + timedelta(microseconds=int(micros)), _decoded(encoded)
        beyond = (created < at) if newest_first else (created > at)
        same = and_(created == at, key < last if newest_first else key > last)
        query = query.where(or_(beyond, same))
    return query


def page(rows: list[Any], limit: int, created_of, key_of) -> tuple[list[Any], str | None]:
    """The rows of one page (the query asked for limit + 1) and the cursor of the next, if any."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    micros = (created_of(last) - _EPOCH) // timedelta(microseconds=1)
    return rows, f"{micros}_{base64.urlsafe_b64encode(str(key_of(last)).encode()).decode().rstrip('=')}"


def _decoded(encoded: str) -> str:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode(errors="replace")
