"""Keyset pagination of the API's lists: ``?limit=&cursor=``; the next page's cursor in ``X-Next-Cursor``.

Lists stay JSON arrays (clients that read one page keep working); a page that has a successor answers
the header ``X-Next-Cursor``, to be sent back as ``cursor``.  The cursor is opaque (base64url of the last
id of the page): rows are ordered by id, so pages neither skip nor repeat rows while others are added.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Query, Response

from cloud.store.registry import MAX_PAGE, Invalid

DEFAULT_PAGE = 100
NEXT_CURSOR = "X-Next-Cursor"
#: the ``responses`` of a paged route, documenting the header
PAGED: dict[int | str, dict[str, Any]] = {200: {"headers": {NEXT_CURSOR: {
    "description": "present when another page follows: send it back as ?cursor=", "schema": {"type": "string"}}}}}


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Row = TypeVar("Row", bound=HasId)


@dataclass(frozen=True)
class Page:
    limit: int
    after: str | None

    @property
    def fetch(self) -> int:
        """How many rows to ask the store for: one more than a page, to know whether another follows."""
        return self.limit + 1

    def answer(self, rows: Sequence[Row], response: Response) -> list[Row]:
        """The page's rows, setting the next cursor on ``response`` when more rows follow."""
        if len(rows) > self.limit:
            response.headers[NEXT_CURSOR] = base64.urlsafe_b64encode(rows[self.limit - 1].id.encode()).decode()
            return list(rows[:self.limit])
        return list(rows)


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=200, description=f"the {NEXT_CURSOR} of the previous page")] = None,
) -> Page:
    if cursor is None:
        return Page(limit, None)
    try:
        after = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Invalid(f"cursor: not a cursor of this API ({cursor!r}); start again without one") from None
    return Page(limit, after)


PageDep = Annotated[Page, Depends(page_params)]
