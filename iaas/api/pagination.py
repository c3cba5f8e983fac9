"""Pagination for every list: ``{"next", "previous", "results"}`` (API.md)."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination, PageNumberPagination


class PagePagination(PageNumberPagination):
    """Numbered pages for short lists (wallets, servers, plans); adds ``count``."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class SequenceCursorPagination(CursorPagination):
    """Cursor pages over a per-wallet ``sequence``, newest first: stable while entries
    are appended, and cheap however deep the page (no OFFSET)."""

    ordering = "-sequence"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
