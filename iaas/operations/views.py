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
    """200 when the database answers with every migration applied, 503 when not. The
    broker (if one is configured) is checked and reported, and a broker out of reach is
    "degraded", still 200: an app host sells without it (the outbox keeps the work until
    the broker is back), so a RabbitMQ outage must not take every app host out of the
    load balancer."""
    checks = {"database": readiness.database(), "broker": readiness.broker()}
    if checks["database"] != "ok":
        return JsonResponse({"status": "unavailable", **checks}, status=503)
    status = "ready" if checks["broker"] in ("ok", "not configured") else "degraded"
    return JsonResponse({"status": status, **checks})


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
