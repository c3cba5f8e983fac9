"""The endpoints machines read: liveness (/healthz) and readiness (/readyz) for load
balancers and orchestrators, and /metrics for Prometheus."""

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import metrics as metrics_exposition
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


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus's scrape, for ``Authorization: Bearer <IAAS_METRICS_TOKEN>`` only. With
    no token configured there is no such page (404); a wrong or missing token is a 401."""
    token = settings.IAAS_METRICS_TOKEN
    if not token:
        raise Http404
    if not metrics_exposition.bearer_accepted(request.headers.get("Authorization", ""), token):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics_exposition.exposition()
    return HttpResponse(body, content_type=content_type)
