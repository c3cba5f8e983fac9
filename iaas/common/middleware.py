"""The request id middleware: every request runs under an id (``iaas.common.request_ids``)
that its log lines and the tasks it publishes carry, and its response names it in
``X-Request-ID``. The proxy's id is kept when it looks like one, so a line in the
proxy's log and ours match; anything else is replaced, never written into our logs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import request_ids


class RequestIdMiddleware:
    """First after Prometheus's: what every other middleware logs carries the id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_ids.accepted(request.headers.get(request_ids.HEADER)) or request_ids.new()
        # Also on the request: Django logs an error response (a 4xx, a 5xx a view returned)
        # after the middleware has returned, with the request on the record.
        request.request_id = request_id
        with request_ids.bound(request_id):
            response = self.get_response(request)
        response[request_ids.HEADER] = request_id
        return response
