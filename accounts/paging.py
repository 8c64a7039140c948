"""The admin's lists of tables that grow without bound (messages, users,
login attempts): counted up to a cap, not to the end of the table.

Django's changelist counts its rows on every page: a COUNT(*) of the
filtered table for the paginator, and a second one of the whole table for
"N total" unless `show_full_result_count` is off. Each reads every row it
counts: seconds at ten million messages. Here accounts is the lowest app,
so messaging's admin uses this too.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

# Rows counted at most: a hundred pages of the admin's hundred rows.
COUNT_CAP = 10_000


class AtLeast(int):
    """A count that stopped at the cap: it compares and pluralises as the
    number, and shows as "10,000+" wherever the admin prints the count (the
    pagination line, "N results", "Select all N")."""

    def __str__(self) -> str:
        return f"{int(self):,}+"


def estimated_rows(rows: QuerySet[Any]) -> int | None:
    """PostgreSQL's planner's estimate of how many rows `rows` has (from its
    statistics: no row is read), None on other databases."""
    if connections[rows.db].vendor != "postgresql":
        return None
    if rows.query.is_empty():  # .none(): nothing to ask
        return 0
    plan = json.loads(rows.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


class CappedPaginator(Paginator[Any]):
    """Counts at most `cap` + 1 rows (`SELECT COUNT(*) FROM (SELECT ...
    LIMIT cap + 1)`), in whatever order the database finds them cheapest,
    so a filter on an indexed column costs the same at any table size.
    Past the cap, the count is `AtLeast(cap)` and the pages stop there: a
    deeper OFFSET reads every row it skips; a filter narrows the list.

    On PostgreSQL, when the planner expects well over `cap` rows, nothing
    is counted: finding even `cap` rows of a condition no index serves (a
    word of the full-text search in 0.2% of ten million messages) reads
    five million rows, and the count would say "10,000+" anyway.
    """

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        rows: Any = self.object_list
        if not isinstance(rows, QuerySet):
            return super().count
        # Only the key: the list's annotations (a count per row) are not counted.
        keys = rows.order_by().values("pk")
        expected = estimated_rows(keys)
        if expected is not None and expected > 2 * self.cap:
            return AtLeast(self.cap)
        counted = keys[: self.cap + 1].count()
        return AtLeast(self.cap) if counted > self.cap else counted


_M = TypeVar("_M", bound=Model)


class BigTableAdmin(admin.ModelAdmin[_M]):
    """The admin of a table that grows without bound: the capped count, no
    count of the whole table, and no facet counts (one more COUNT per
    choice of every filter).

    `ordered_while` maps a filter's query parameter (a prefix when it ends
    in "__") to the indexed column the filter reads: while that filter is
    on, the list is ordered by that column, newest first, so one index
    walk serves the filter and the order. In id order instead, SQLite
    (which cannot tell how many rows a range holds) reads the filter's rows
    through its index, then sorts all of them: a year of messages for
    "this year", every login attempt for "lock in force".
    """

    paginator: ClassVar[type] = CappedPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordered_while: ClassVar[dict[str, str]] = {}

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        changelist = super().get_changelist_instance(request)
        changelist.result_list = self.page_loaded(list(changelist.result_list))
        return changelist

    def page_loaded(self, rows: list[_M]) -> list[_M]:
        """Add to the rows of the page what the list shows of them that a
        join cannot give (a count of their messages, say), in one query per
        column for these rows only. As a subquery in the list's SELECT it
        runs for every row an OFFSET skips too: page 10 of rooms counted
        the messages of a thousand rooms."""
        return rows

    def get_ordering(self, request: HttpRequest) -> list[str] | tuple[Any, ...]:
        for parameter, column in self.ordered_while.items():
            if any(key == parameter or (parameter.endswith("__") and key.startswith(parameter)) for key in request.GET):
                return [f"-{column}"]
        return super().get_ordering(request)
