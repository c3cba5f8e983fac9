"""Rate limits per client address for the endpoints anyone can call (registration,
token issue). Rates come from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], read on each
request so a settings change (or a test's override) takes effect."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class ClientAddressThrottle(SimpleRateThrottle):
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class RegisterThrottle(ClientAddressThrottle):
    scope = "register"


class TokenThrottle(ClientAddressThrottle):
    scope = "token"
