"""Development settings: safe defaults, DEBUG on unless the environment says otherwise."""

from .base import *  # noqa: F403
from .base import env_bool

DEBUG = env_bool("DEBUG", True)
# Webhooks to a receiver on this machine may be plain http://; loopback and private
# addresses stay refused unless IAAS_OUTGOING_ALLOW_PRIVATE=1 says otherwise.
IAAS_OUTGOING_REQUIRE_HTTPS = env_bool("IAAS_OUTGOING_REQUIRE_HTTPS", False)
