"""The API fixtures of tests/api (a customer's client, another customer's, fresh
throttles) for the notifications tests."""

from tests.api.conftest import _fresh_throttles, anonymous, api, other_api  # noqa: F401
