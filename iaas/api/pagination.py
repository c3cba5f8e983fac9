"""Pagination for every list: ``{"next", "previous", "results"}`` (API.md).

A ``page_size`` that is not a whole number from 1 to the maximum is a 400, not silently
the default: a client's mistake should be visible.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


def _strict_page_size(paginator, request) -> int:
    raw = request.query_params.get(paginator.page_size_query_param)
    if raw is None:
        return paginator.page_size
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= paginator.max_page_size:
        raise ValidationError(
            {paginator.page_size_query_param: [f"A whole number from 1 to {paginator.max_page_size}."]}
        )
    return int(raw)


class PagePagination(PageNumberPagination):
    """Numbered pages for short lists (wallets, servers, plans); adds ``count``. A page
    that is not a whole number is a 400; one past the end, a 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if raw in self.last_page_strings:
            return raw
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_query_param: ["A whole number from 1."]})
        return raw

    def get_page_size(self, request):
        return _strict_page_size(self, request)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters


class SequenceCursorPagination(CursorPagination):
    """Cursor pages over a per-wallet ``sequence``, newest first: stable while entries
    are appended, and cheap however deep the page (no OFFSET)."""

    ordering = "-sequence"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        return _strict_page_size(self, request)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
        return parameters
