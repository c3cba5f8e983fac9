"""The endpoints machines read: liveness (/healthz) and readiness (/readyz), for load
balancers and orchestrators."""

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import readiness


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers with every migration applied and the broker (if one
    is configured) takes a connection; 503 naming the check that failed."""
    checks = {"database": readiness.database(), "broker": readiness.broker()}
    ready = checks["database"] == "ok" and checks["broker"] in ("ok", "not configured")
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", **checks}, status=200 if ready else 503
    )
