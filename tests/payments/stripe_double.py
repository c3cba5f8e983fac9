"""A local stand-in for Stripe's API, so that payment tests never touch the network.

localstripe (PyPI) was tried and cannot serve: it ignores Idempotency-Key, knows no
automatic_payment_methods and cannot confirm. This double answers the real `stripe` client over
loopback HTTP as Stripe documents it for API version `stripe.api_version`: its objects (ids with
Stripe's prefixes, the fields that version always returns), its status machines, its errors and
HTTP statuses, and its idempotency layer, which our crash safety rests on.

Tests also play the parts no API call plays: the customer's browser (`pay`, `confirm_setup`,
`authenticate`), the business and the card network (`refund`, `dispute`), a network that loses
an answer after Stripe acted (`drop_next_response`), an outage (`fail_next`), and a request
still executing when its idempotency key comes again (`hold_next`). `now` is the double's clock
(settable, `advance`). Events are recorded, never posted: tests deliver them, in order, out of
order or twice.

Left out on purpose: manual capture, Connect, and the endpoints the app does not call. A parameter
the double does not know is refused, as Stripe refuses an unknown one, so the app cannot come to
rely on something the double would silently ignore.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

IDEMPOTENCY_KEY_LIFETIME = 24 * 60 * 60
# Stripe's smallest chargeable amounts (minor units) for the currencies we may sell in.
MINIMUM_AMOUNTS = {"eur": 50, "usd": 50, "gbp": 30, "chf": 50, "jpy": 50, "sek": 300, "dkk": 250}
MAXIMUM_AMOUNT = 99_999_999
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
PAYMENT_CANCELABLE = (*CONFIRMABLE, "requires_capture", "processing")
PAYMENT_CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")
SETUP_CANCELLATION_REASONS = ("abandoned", "duplicate", "requested_by_customer")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# fmt: off
DISPUTE_REASONS = (
    "bank_cannot_process", "check_returned", "credit_not_processed", "customer_initiated",
    "debit_not_authorized", "duplicate", "fraudulent", "general", "incorrect_account_details",
    "insufficient_funds", "noncompliant", "product_not_received", "product_unacceptable",
    "subscription_canceled", "unrecognized",
)
# fmt: on
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}
KINDS = {"cus": "customer", "pi": "payment_intent", "seti": "setup_intent", "pm": "PaymentMethod"}


@dataclass(frozen=True)
class TestCard:
    """How one of Stripe's test cards behaves."""

    __test__ = False  # not a pytest class

    brand: str
    last4: str
    decline_code: str | None = None  # every payment is refused with it
    declines_setup: bool = False  # saving the card (setup, attach) is refused too
    requires_authentication: bool = False  # 3D Secure on every payment and every setup


# Stripe's test-mode PaymentMethods. Using one makes a new pm_ that behaves alike, as Stripe does.
TEST_CARDS = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", "generic_decline", declines_setup=True),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", "insufficient_funds", declines_setup=True
    ),
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", "generic_decline"),  # saves, then refuses
    "pm_card_authenticationRequired": TestCard("visa", "3184", requires_authentication=True),
}


def new_id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return f"{prefix}_" + "".join(secrets.choice(alphabet) for _ in range(length))


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe sends with `payload`: t=<unix seconds>,v1=<hex
    HMAC-SHA256 keyed with the endpoint secret over "<t>.<payload>">. Written from Stripe's
    "verify manually" description, not with the stripe library, so it tests the app's check."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), b"%d.%s" % (timestamp, payload), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def event_body(event: dict) -> bytes:
    """An event as Stripe posts it: its JSON."""
    return json.dumps(event, indent=2).encode()


def parse_params(encoded: str) -> dict:
    """Stripe's form encoding (query strings too) as nested values: `a[b]=1` a dict, `a[0]=x`
    and `a[]=x` lists. Every leaf stays a string, as Stripe receives it."""
    root: dict = {}
    for key, value in urllib.parse.parse_qsl(encoded, keep_blank_values=True):
        path = [key.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", key)]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1] or str(len(node))] = value
    return _lists_from_indexes(root)


def _lists_from_indexes(node, key: str = ""):
    if not isinstance(node, dict):
        return node
    node = {k: _lists_from_indexes(v, k) for k, v in node.items()}
    if node and key != "metadata" and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


def error_body(kind: str, message: str, **details) -> dict:
    """Stripe's error object; absent details are left out, as Stripe leaves them out."""
    if details.get("code"):
        details.setdefault(
            "doc_url", "https://stripe.com/docs/error-codes/" + details["code"].replace("_", "-")
        )
    return {"type": kind, "message": message} | {k: v for k, v in details.items() if v is not None}


class StripeFailure(Exception):
    """An answer in Stripe's error shape. Stripe's idempotency layer keeps an answer once the
    endpoint began executing, so `stored` is false for a refusal during validation."""

    def __init__(self, status: int, error: dict, stored: bool = False):
        super().__init__(error["message"])
        self.status, self.error, self.stored = status, error, stored


def invalid(message: str, param: str | None = None, code: str | None = None, **details) -> StripeFailure:
    return StripeFailure(400, error_body("invalid_request_error", message, param=param, code=code, **details))


def _nulls(names: str) -> dict:
    """Fields Stripe answers with null for what the double does not model (Connect, shipping...)."""
    return dict.fromkeys(names.split())


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    stored: bool = True  # kept under its idempotency key


@dataclass
class _KeyRecord:
    request: tuple  # (method, path, params): a reuse must repeat them
    created: int
    reply: Reply | None = None  # None while the first request is still executing


@dataclass
class Hold:
    """A request parked after claiming its idempotency key, until the test releases it."""

    prefix: str
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


ROUTES = [
    ("POST", r"/v1/customers", "create_customer"),
    ("GET", r"/v1/customers/(?P<id>[^/]+)", "retrieve_customer"),
    ("GET", r"/v1/customers/(?P<id>[^/]+)/payment_methods", "list_customer_payment_methods"),
    ("POST", r"/v1/payment_intents", "create_payment_intent"),
    ("GET", r"/v1/payment_intents/(?P<id>[^/]+)", "retrieve_payment_intent"),
    ("POST", r"/v1/payment_intents/(?P<id>[^/]+)/confirm", "confirm_payment_intent"),
    ("POST", r"/v1/payment_intents/(?P<id>[^/]+)/cancel", "cancel_payment_intent"),
    ("POST", r"/v1/setup_intents", "create_setup_intent"),
    ("GET", r"/v1/setup_intents/(?P<id>[^/]+)", "retrieve_setup_intent"),
    ("POST", r"/v1/setup_intents/(?P<id>[^/]+)/confirm", "confirm_setup_intent"),
    ("POST", r"/v1/setup_intents/(?P<id>[^/]+)/cancel", "cancel_setup_intent"),
    ("GET", r"/v1/payment_methods", "list_payment_methods"),
    ("GET", r"/v1/payment_methods/(?P<id>[^/]+)", "retrieve_payment_method"),
    ("POST", r"/v1/payment_methods/(?P<id>[^/]+)/attach", "attach_payment_method"),
    ("POST", r"/v1/payment_methods/(?P<id>[^/]+)/detach", "detach_payment_method"),
    ("POST", r"/v1/refunds", "create_refund"),
]


class StripeDouble:
    """Stripe's API on 127.0.0.1, on an ephemeral port; `url` is its base address."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one lock around all state
        self._clock_offset = 0.0
        self._objects: dict[str, dict] = {}
        self._cards: dict[str, TestCard] = {}  # how each PaymentMethod behaves
        self._spent: set[str] = set()  # PaymentMethods Stripe will not use again
        self._keys: dict[tuple[str, str], _KeyRecord] = {}  # by (API key, Idempotency-Key)
        self._drops: list[str] = []
        self._holds: list[Hold] = []
        self._failures: list[tuple[str, int]] = []
        self._request = {"id": None, "idempotency_key": None}  # the one acting, for its events
        self.requests: list[tuple[str, str, dict, str | None]] = []
        self.responses: list[tuple[str, str, int, dict]] = []
        self.events: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        for shortcut, card in TEST_CARDS.items():
            self._store(self._card_payment_method(shortcut, card))

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> StripeDouble:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.double = self
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # a quick stop()
        threading.Thread(target=serve, name="stripe-double", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StripeDouble:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the double first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def now(self) -> int:
        return int(time.time() + self._clock_offset)

    @now.setter
    def now(self, value: int) -> None:
        self._clock_offset = value - time.time()

    def advance(self, seconds: float) -> None:
        self._clock_offset += seconds

    # -- faults -------------------------------------------------------------------------------

    def drop_next_response(self, path_prefix: str = "/v1/payment_intents") -> None:
        """The next POST under `path_prefix` acts and is remembered under its idempotency key,
        then its connection closes unanswered: Stripe acted, the caller never heard."""
        with self._lock:
            self._drops.append(path_prefix)

    def fail_next(self, n: int = 1, status: int = 500, path_prefix: str = "/v1/") -> None:
        """The next `n` requests under `path_prefix` get Stripe's api_error, nothing done."""
        with self._lock:
            self._failures.extend([(path_prefix, status)] * n)

    def hold_next(self, path_prefix: str) -> Hold:
        """Park the next POST under `path_prefix` once it holds its idempotency key, until
        `release()`: what another request with that key meets while the first executes."""
        hold = Hold(path_prefix)
        with self._lock:
            self._holds.append(hold)
        return hold

    # -- introspection ------------------------------------------------------------------------

    def _all(self, kind: str) -> dict[str, dict]:
        with self._lock:
            return {k: copy.deepcopy(v) for k, v in self._objects.items() if v["object"] == kind}

    @property
    def payment_intents(self) -> dict[str, dict]:
        return self._all("payment_intent")

    @property
    def setup_intents(self) -> dict[str, dict]:
        return self._all("setup_intent")

    @property
    def customers(self) -> dict[str, dict]:
        return self._all("customer")

    @property
    def payment_methods(self) -> dict[str, dict]:
        return self._all("payment_method")

    def get(self, object_id: str) -> dict:
        with self._lock:
            return copy.deepcopy(self._objects[object_id])

    def events_of(self, event_type: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["type"] == event_type]

    # -- the parts tests play -----------------------------------------------------------------

    def pay(self, payment_intent_id: str, payment_method: str = "pm_card_visa") -> dict:
        """The customer's browser confirming on-session with the client secret (Stripe.js gives
        the return_url). A refusal leaves the PaymentIntent awaiting another payment method."""
        with self._acting_alone():
            intent = self._object(payment_intent_id, "pi")
            self._confirm_payment(intent, payment_method, off_session=False, from_server=False)
            return copy.deepcopy(intent)

    def confirm_setup(self, setup_intent_id: str, payment_method: str = "pm_card_visa") -> dict:
        with self._acting_alone():
            intent = self._object(setup_intent_id, "seti")
            self._confirm_setup(intent, payment_method, from_server=False)
            return copy.deepcopy(intent)

    def authenticate(self, intent_id: str, succeed: bool = True) -> dict:
        """The customer completing (or failing) 3D Secure on an intent that requires_action."""
        with self._acting_alone():
            intent = self._objects[intent_id]
            assert intent["status"] == "requires_action", f"{intent_id} is {intent['status']}"
            method = self._objects[intent["payment_method"]]
            if intent["object"] == "setup_intent" and succeed:
                self._setup_succeeded(intent, method)
            elif intent["object"] == "setup_intent":
                self._setup_failed(intent, method, "setup_intent_authentication_failure", None)
            elif succeed:
                self._payment_succeeded(intent, method)
            else:
                self._payment_refused(intent, method, "payment_intent_authentication_failure", None)
            return copy.deepcopy(intent)

    def cancel(self, payment_intent_id: str, cancellation_reason: str | None = None) -> dict:
        with self._acting_alone():
            params = {"cancellation_reason": cancellation_reason} if cancellation_reason else {}
            return copy.deepcopy(self.cancel_payment_intent(params, payment_intent_id))

    def refund(self, payment_intent_id: str, amount: int | None = None) -> dict:
        """The business refunding from the Dashboard."""
        with self._acting_alone():
            refund = self._refund(self._object(payment_intent_id, "pi"), amount, reason=None, metadata={})
            return copy.deepcopy(refund)

    def dispute(self, payment_intent_id: str, amount: int | None = None, reason: str = "fraudulent") -> dict:
        """The cardholder's bank opening a chargeback: nobody's API request."""
        assert reason in DISPUTE_REASONS, reason
        with self._acting_alone(by_request=False):
            intent = self._object(payment_intent_id, "pi")
            assert intent["status"] == "succeeded", f"{payment_intent_id} has no charge to dispute"
            charge = self._objects[intent["latest_charge"]]
            amount = charge["amount"] if amount is None else amount
            assert 0 < amount <= charge["amount"], amount
            dispute = self._store(self._dispute(charge, amount, reason))
            charge["disputed"] = True
            self._emit("charge.dispute.created", dispute)
            return copy.deepcopy(dispute)

    @contextlib.contextmanager
    def _acting_alone(self, by_request: bool = True):
        """A test's act, under the lock; its events name a request of its own (a browser's, the
        Dashboard's) without idempotency key, or none for what the card network starts."""
        with self._lock:
            self._request = {"id": new_id("req", 14) if by_request else None, "idempotency_key": None}
            yield

    # -- HTTP ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, encoded: str, headers) -> Reply | None:
        """One request's answer, or None when the answer is to be lost."""
        params = parse_params(encoded)
        key = headers.get("Idempotency-Key") if method == "POST" else None
        with self._lock:
            self.requests.append((method, path, copy.deepcopy(params), key))
        try:
            api_key = self._authenticated_key(headers.get("Authorization", ""))
            self._take_injected_failure(path)
            route, ids = self._route(method, path)
            if method == "POST" and key:
                return self._idempotent(route, params, ids, (api_key, key), (method, path, params))
            with self._lock:
                return self._answer(route, params, ids, key)
        except StripeFailure as failure:
            return Reply(failure.status, {"error": failure.error})
        except Exception as crash:  # a bug of the double: say so, and ask the client not to retry
            body = {"error": error_body("api_error", f"The Stripe double crashed: {crash!r}")}
            return Reply(500, body, {"Stripe-Should-Retry": "false"})

    def _idempotent(self, route: str, params: dict, ids: dict, scope: tuple[str, str], request: tuple):
        """Stripe's idempotency layer: the first request with a key acts and its answer is kept;
        a repeat gets that answer again, also when it was lost on the way."""
        with self._lock:
            replay = self._claim_key(scope, request)
        if replay is not None:
            return replay
        self._wait_if_held(request[1])
        with self._lock:
            try:
                reply = self._answer(route, params, ids, scope[1])
            except Exception:
                del self._keys[scope]  # the double's own bug: leave the key free
                raise
            if reply.stored:
                self._keys[scope].reply = copy.deepcopy(reply)
            else:
                del self._keys[scope]  # refused before acting: the key may be used again
            dropped = next((p for p in self._drops if request[1].startswith(p)), None)
            if dropped is not None:
                self._drops.remove(dropped)
                return None
        return reply

    def _answer(self, route: str, params: dict, ids: dict, key: str | None) -> Reply:
        self._request = {"id": new_id("req", 14), "idempotency_key": key}
        params = copy.deepcopy(params)
        expand = params.pop("expand", [])
        try:
            body = copy.deepcopy(getattr(self, route)(params, **ids))
            for path in expand if isinstance(expand, list) else [expand]:
                self._expand(body, path.split("."))
            return Reply(200, body)
        except StripeFailure as failure:
            return Reply(failure.status, {"error": failure.error}, stored=failure.stored)

    def _claim_key(self, scope: tuple[str, str], request: tuple) -> Reply | None:
        record = self._keys.get(scope)
        if record is not None and self.now - record.created >= IDEMPOTENCY_KEY_LIFETIME:
            record = None  # pruned after 24 hours: the key acts afresh
        if record is None:
            self._keys[scope] = _KeyRecord(request, self.now)
            return None
        if record.request != request:
            raise StripeFailure(
                400,
                error_body(
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than '{scope[1]}' if you meant to execute "
                    "a different request.",
                ),
            )
        if record.reply is None:
            raise StripeFailure(
                409,
                error_body(
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotency Key (that "
                    "probably means you submitted twice, and the other request is still going through): "
                    f"{scope[1]}. Please try again later.",
                ),
            )
        return Reply(record.reply.status, record.reply.body, {"Idempotent-Replayed": "true"})

    def _wait_if_held(self, path: str) -> None:
        with self._lock:
            hold = next((h for h in self._holds if path.startswith(h.prefix)), None)
            if hold is not None:
                self._holds.remove(hold)
        if hold is not None:
            hold.reached.set()
            hold.released.wait(30)

    @staticmethod
    def _authenticated_key(authorization: str) -> str:
        scheme, _, api_key = authorization.partition(" ")
        if scheme != "Bearer" or not api_key:
            message = (
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            )
            raise StripeFailure(401, error_body("invalid_request_error", message))
        if not api_key.startswith(("sk_test_", "rk_test_")):
            message = f"Invalid API Key provided: {api_key[:8]}****"
            raise StripeFailure(401, error_body("invalid_request_error", message))
        return api_key

    def _take_injected_failure(self, path: str) -> None:
        with self._lock:
            failure = next((f for f in self._failures if path.startswith(f[0])), None)
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None:
            raise StripeFailure(failure[1], error_body("api_error", "An unknown error occurred"))

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, dict]:
        for route_method, pattern, route in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return route, match.groupdict()
        message = (
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we "
            "can help at https://support.stripe.com/."
        )
        raise StripeFailure(404, error_body("invalid_request_error", message))

    def _expand(self, node, path: list[str]) -> None:
        head, rest = path[0], path[1:]
        if isinstance(node, dict) and node.get("object") == "list" and head == "data":
            for item in node["data"]:
                self._expand(item, rest)
            return
        if not isinstance(node, dict) or head not in node:
            raise invalid(f"This property cannot be expanded ({'.'.join(path)}).", "expand")
        if isinstance(node[head], str) and node[head] in self._objects:
            node[head] = copy.deepcopy(self._objects[node[head]])
        if rest:
            self._expand(node[head], rest)

    # -- state --------------------------------------------------------------------------------

    def _store(self, obj: dict) -> dict:
        self._objects[obj["id"]] = obj
        return obj

    def _object(self, object_id: str, prefix: str, param: str | None = None) -> dict:
        """An object by id: 404 when the URL names it, 400 when a parameter does."""
        found = self._objects.get(object_id)
        if found is not None and object_id.startswith(prefix + "_"):
            return found
        message = f"No such {KINDS[prefix]}: '{object_id}'"
        if param is None:
            raise StripeFailure(404, error_body("invalid_request_error", message, code="resource_missing"))
        raise invalid(message, param, "resource_missing")

    def _emit(self, event_type: str, obj: dict) -> None:
        self.events.append(
            {
                "id": new_id("evt"),
                "object": "event",
                "api_version": stripe.api_version,
                "created": self.now,
                "data": {"object": copy.deepcopy(obj)},
                "livemode": False,
                "pending_webhooks": 1,
                "request": dict(self._request),
                "type": event_type,
            }
        )

    # -- parameters ---------------------------------------------------------------------------

    @staticmethod
    def _only(params: dict, allowed: str) -> None:
        for name in params:
            if name not in allowed.split():
                raise invalid(f"Received unknown parameter: {name}", name, "parameter_unknown")

    @staticmethod
    def _flag(params: dict, name: str) -> bool:
        value = params.get(name, "false")
        if value not in ("true", "false"):
            raise invalid(f"Invalid boolean: {value}", name)
        return value == "true"

    @staticmethod
    def _integer(params: dict, name: str) -> int:
        if name not in params:
            raise invalid(f"Missing required param: {name}.", name, "parameter_missing")
        if not re.fullmatch(r"-?\d+", str(params[name])):
            raise invalid(f"Invalid integer: {params[name]}", name, "parameter_invalid_integer")
        return int(params[name])

    @staticmethod
    def _metadata(params: dict) -> dict:
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict) or len(metadata) > 50:
            raise invalid("Invalid metadata: at most 50 keys, each with a string value.", "metadata")
        for key, value in metadata.items():
            if len(key) > 40 or not isinstance(value, str) or len(value) > 500:
                raise invalid("Metadata keys take up to 40 characters, values 500.", f"metadata[{key}]")
        return {k: v for k, v in metadata.items() if v != ""}

    def _amount(self, params: dict, currency: str) -> int:
        amount, minimum = self._integer(params, "amount"), MINIMUM_AMOUNTS.get(currency, 1)
        if amount < minimum:
            raise invalid(f"Amount must be at least {minimum} {currency}", "amount", "amount_too_small")
        if amount > MAXIMUM_AMOUNT:
            raise invalid(f"Amount must be no more than {MAXIMUM_AMOUNT}", "amount", "amount_too_large")
        return amount

    def _customer(self, params: dict, required: bool = False) -> str | None:
        if "customer" not in params and required:
            raise invalid("Missing required param: customer.", "customer", "parameter_missing")
        return params.get("customer") and self._object(params["customer"], "cus", "customer")["id"]

    def _payment_method_choice(self, params: dict) -> tuple[dict | None, list[str]]:
        """(automatic_payment_methods, payment_method_types): automatic unless types are named,
        Stripe's default since API version 2023-08-16."""
        automatic, types = params.get("automatic_payment_methods"), params.get("payment_method_types")
        if automatic is not None and types is not None:
            raise invalid(
                "You may only specify one of these parameters: automatic_payment_methods, "
                "payment_method_types.",
                "automatic_payment_methods",
                "parameters_exclusive",
            )
        if types is not None:
            if types != ["card"]:
                raise invalid("The Stripe double takes cards only.", "payment_method_types")
            return None, types
        automatic = {"enabled": "true"} if automatic is None else automatic
        if not isinstance(automatic, dict):
            raise invalid("Invalid object", "automatic_payment_methods")
        self._only(automatic, "enabled allow_redirects")
        redirects = automatic.get("allow_redirects", "always")
        if not self._flag(automatic, "enabled") or redirects not in ("always", "never"):
            raise invalid("Invalid automatic_payment_methods.", "automatic_payment_methods")
        return {"allow_redirects": redirects, "enabled": True}, ["card"]

    @staticmethod
    def _needs_return_url(intent: dict, params: dict) -> None:
        """Stripe refuses a server-side confirmation that might redirect and has nowhere to
        return to; off_session too, its documented examples pass a return_url."""
        automatic = intent["automatic_payment_methods"]
        if automatic and automatic["allow_redirects"] != "never" and not params.get("return_url"):
            raise invalid(
                "A `return_url` must be specified because this Payment Intent is configured to "
                "automatically accept the payment methods enabled in the Dashboard, some of which may "
                "require a full page redirect to succeed. If you do not want to accept redirect-based "
                "payment methods, set `automatic_payment_methods[enabled]` to `true` and "
                "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents "
                "and Payment Intents.",
                "return_url",
            )

    def _usable_payment_method(self, name: str, customer: str | None, param: str = "payment_method") -> dict:
        """The PaymentMethod a confirmation or attachment uses: a test card's shortcut makes a
        new one, as Stripe does."""
        if name in TEST_CARDS:
            return self._store(self._card_payment_method(new_id("pm"), TEST_CARDS[name]))
        method = self._object(name, "pm", param)
        if name in self._spent:
            raise invalid(
                "This PaymentMethod was previously used without being attached to a Customer or was "
                "detached from a Customer, and may not be used again.",
                param,
            )
        if method["customer"] not in (None, customer):
            raise invalid(
                f"The provided PaymentMethod belongs to another Customer ({method['customer']}).", param
            )
        return method

    # -- customers ----------------------------------------------------------------------------

    def create_customer(self, params: dict) -> dict:
        self._only(params, "email name description phone metadata")
        customer = self._store(
            {
                "id": new_id("cus", 14),
                "object": "customer",
                "balance": 0,
                "created": self.now,
                "delinquent": False,
                "description": params.get("description"),
                "email": params.get("email"),
                "invoice_prefix": secrets.token_hex(4).upper(),
                "invoice_settings": _nulls("custom_fields default_payment_method footer rendering_options"),
                "livemode": False,
                "metadata": self._metadata(params),
                "name": params.get("name"),
                "next_invoice_sequence": 1,
                "phone": params.get("phone"),
                "preferred_locales": [],
                "tax_exempt": "none",
            }
            | _nulls("address currency default_source discount shipping test_clock")
        )
        self._emit("customer.created", customer)
        return customer

    def retrieve_customer(self, params: dict, id: str) -> dict:
        return self._object(id, "cus")

    # -- payment methods ----------------------------------------------------------------------

    def _card_payment_method(self, pm_id: str, card: TestCard) -> dict:
        self._cards[pm_id] = card
        return {
            "id": pm_id,
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {"address": _nulls("city country line1 line2 postal_code state")}
            | _nulls("email name phone tax_id"),
            "card": {
                "brand": card.brand,
                "checks": _nulls("address_line1_check address_postal_code_check cvc_check"),
                "country": "US",
                "display_brand": card.brand,
                "exp_month": 12,
                "exp_year": time.gmtime(self.now).tm_year + 3,
                "fingerprint": hashlib.sha256(card.last4.encode()).hexdigest()[:16],
                "funding": "credit",
                "last4": card.last4,
                "networks": {"available": [card.brand], "preferred": None},
                "regulated_status": "unregulated",
                "three_d_secure_usage": {"supported": True},
            }
            | _nulls("generated_from wallet"),
            "created": self.now,
            "livemode": False,
            "metadata": {},
            "type": "card",
        } | _nulls("customer customer_account")

    def retrieve_payment_method(self, params: dict, id: str) -> dict:
        return self._object(id, "pm")

    def list_payment_methods(self, params: dict) -> dict:
        self._only(params, "customer type limit")
        return self._payment_method_list(params, self._customer(params, required=True), "/v1/payment_methods")

    def list_customer_payment_methods(self, params: dict, id: str) -> dict:
        self._only(params, "type limit")
        self._object(id, "cus")
        return self._payment_method_list(params, id, f"/v1/customers/{id}/payment_methods")

    def _payment_method_list(self, params: dict, customer: str | None, url: str) -> dict:
        limit = self._integer(params, "limit") if "limit" in params else 10
        found = [
            o for o in self._objects.values() if o["object"] == "payment_method" and o["customer"] == customer
        ]
        found = [o for o in found if params.get("type", "card") == o["type"]]
        found.sort(key=lambda o: -o["created"])  # newest first
        return {"object": "list", "data": found[:limit], "has_more": len(found) > limit, "url": url}

    def attach_payment_method(self, params: dict, id: str) -> dict:
        self._only(params, "customer")
        customer = self._customer(params, required=True)
        if id in TEST_CARDS and TEST_CARDS[id].declines_setup:
            raise StripeFailure(
                402, self._card_error("card_declined", TEST_CARDS[id].decline_code), stored=True
            )
        method = self._usable_payment_method(id, customer, "payment_method")
        if method["customer"] is None:
            self._attach(method, customer)
        return method

    def _attach(self, method: dict, customer: str) -> None:
        method["customer"] = customer
        self._emit("payment_method.attached", method)

    def detach_payment_method(self, params: dict, id: str) -> dict:
        self._only(params, "")
        method = self._object(id, "pm")
        if method["customer"] is None:
            raise invalid(
                "The payment method you provided is not attached to a customer so detachment is impossible."
            )
        method["customer"] = None
        self._spent.add(id)
        self._emit("payment_method.detached", method)
        return method

    # -- payment intents ----------------------------------------------------------------------

    def create_payment_intent(self, params: dict) -> dict:
        self._only(
            params,
            "amount currency customer payment_method confirm off_session metadata description return_url "
            "automatic_payment_methods payment_method_types setup_future_usage statement_descriptor_suffix "
            "receipt_email",
        )
        if not re.fullmatch(r"[A-Za-z]{3}", params.get("currency", "")):
            raise invalid("Missing required param: currency.", "currency", "parameter_missing")
        currency = params["currency"].lower()
        amount, customer = self._amount(params, currency), self._customer(params)
        confirm, off_session = self._flag(params, "confirm"), self._flag(params, "off_session")
        if off_session and not confirm:
            raise invalid("You may only specify `off_session` when `confirm` is true.", "off_session")
        if confirm and not params.get("payment_method"):
            raise invalid(
                "Confirming at creation needs a payment_method.", "payment_method", "parameter_missing"
            )
        if params.get("setup_future_usage") not in (None, "on_session", "off_session"):
            raise invalid(f"Invalid setup_future_usage: {params['setup_future_usage']}", "setup_future_usage")
        automatic, types = self._payment_method_choice(params)
        intent = self._payment_intent(params, amount, currency, customer, automatic, types)
        if confirm:
            self._needs_return_url(intent, params)
        if params.get("payment_method"):
            intent["payment_method"] = self._usable_payment_method(params["payment_method"], customer)["id"]
            intent["status"] = "requires_confirmation"
        self._emit("payment_intent.created", self._store(intent))
        if confirm:
            self._confirm_payment(intent, None, off_session, from_server=True)
        return intent

    def _payment_intent(self, params, amount, currency, customer, automatic, types) -> dict:
        pi_id = new_id("pi")
        return {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "automatic_payment_methods": automatic,
            "capture_method": "automatic_async",
            "client_secret": f"{pi_id}_secret_{new_id('s', 25)[2:]}",
            "confirmation_method": "automatic",
            "created": self.now,
            "currency": currency,
            "customer": customer,
            "description": params.get("description"),
            "livemode": False,
            "metadata": self._metadata(params),
            "payment_method_configuration_details": {"id": "pmc_double", "parent": None}
            if automatic
            else None,
            "payment_method_options": {
                "card": {"request_three_d_secure": "automatic"}
                | _nulls("installments mandate_options network")
            },
            "payment_method_types": types,
            "receipt_email": params.get("receipt_email"),
            "setup_future_usage": params.get("setup_future_usage"),
            "statement_descriptor_suffix": params.get("statement_descriptor_suffix"),
            "status": "requires_payment_method",
        } | _nulls(
            "application application_fee_amount canceled_at cancellation_reason customer_account "
            "excluded_payment_method_types last_payment_error latest_charge managed_payments next_action "
            "on_behalf_of payment_method processing review shipping source statement_descriptor "
            "transfer_data transfer_group"
        )

    def retrieve_payment_intent(self, params: dict, id: str) -> dict:
        self._only(params, "client_secret")
        return self._object(id, "pi")

    def confirm_payment_intent(self, params: dict, id: str) -> dict:
        self._only(params, "payment_method off_session return_url")
        intent = self._object(id, "pi")
        if intent["status"] in CONFIRMABLE:
            self._needs_return_url(intent, params)
        off_session = self._flag(params, "off_session")
        self._confirm_payment(intent, params.get("payment_method"), off_session, from_server=True)
        return intent

    def _confirm_payment(
        self, intent: dict, payment_method: str | None, off_session: bool, from_server: bool
    ):
        """Stripe's payment attempt. Refused from a server, it answers 402 card_error carrying the
        PaymentIntent, which awaits a new payment method (after authentication_required too)."""
        if intent["status"] not in CONFIRMABLE:
            raise invalid(
                f"You cannot confirm this PaymentIntent because it has a status of {intent['status']}. Only "
                "a PaymentIntent with one of the following statuses may be confirmed: "
                "requires_confirmation, requires_payment_method, requires_action.",
                code="payment_intent_unexpected_state",
                payment_intent=copy.deepcopy(intent),
            )
        if payment_method:
            intent["payment_method"] = self._usable_payment_method(payment_method, intent["customer"])["id"]
        if intent["payment_method"] is None:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_method",
                "payment_intent_unexpected_state",
                payment_intent=copy.deepcopy(intent),
            )
        method = self._objects[intent["payment_method"]]
        card = self._cards[method["id"]]
        if card.requires_authentication and off_session:
            self._payment_refused(
                intent, method, "authentication_required", "authentication_required", from_server
            )
        elif card.requires_authentication:
            intent.update(status="requires_action", next_action=_three_d_secure(), last_payment_error=None)
            self._emit("payment_intent.requires_action", intent)
        elif card.decline_code:
            self._payment_refused(intent, method, "card_declined", card.decline_code, from_server)
        else:
            self._payment_succeeded(intent, method)

    def _payment_succeeded(self, intent: dict, method: dict) -> None:
        charge = self._store(self._charge(intent, method, failure_code=None, decline_code=None))
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=charge["id"],
            last_payment_error=None,
            next_action=None,
        )
        if intent["setup_future_usage"] and intent["customer"] and method["customer"] is None:
            self._attach(method, intent["customer"])
        if method["customer"] is None:
            self._spent.add(method["id"])  # an unattached PaymentMethod serves once
        self._emit("charge.succeeded", charge)
        self._emit("payment_intent.succeeded", intent)
        # capture_method automatic_async (the default since 2024-04-10) settles the charge's
        # balance transaction just after, announced by charge.updated.
        charge["balance_transaction"] = new_id("txn")
        self._emit("charge.updated", charge)

    def _payment_refused(self, intent, method, code, decline_code, from_server=False) -> None:
        error = self._card_error(code, decline_code, payment_method=copy.deepcopy(method))
        if decline_code is not None:  # the issuer was asked, and said no: a failed charge
            charge = self._store(self._charge(intent, method, failure_code=code, decline_code=decline_code))
            intent["latest_charge"] = error["charge"] = charge["id"]
            self._emit("charge.failed", charge)
        if code == "payment_intent_authentication_failure":
            error["type"] = "invalid_request_error"
            error["message"] = (
                "The provided PaymentMethod has failed authentication. You can provide payment_method_data "
                "or a new PaymentMethod to attempt to fulfill this PaymentIntent again."
            )
        intent.update(
            status="requires_payment_method", last_payment_error=error, payment_method=None, next_action=None
        )
        self._emit("payment_intent.payment_failed", intent)
        if from_server:
            raise StripeFailure(402, error | {"payment_intent": copy.deepcopy(intent)}, stored=True)

    @staticmethod
    def _card_error(code: str, decline_code: str | None, **details) -> dict:
        message = DECLINE_MESSAGES.get(decline_code or "generic_decline")
        return error_body("card_error", message, code=code, decline_code=decline_code, **details)

    def cancel_payment_intent(self, params: dict, id: str) -> dict:
        self._only(params, "cancellation_reason")
        intent = self._object(id, "pi")
        reason = params.get("cancellation_reason")
        if reason not in (None, *PAYMENT_CANCELLATION_REASONS):
            raise invalid(f"Invalid cancellation_reason: {reason}", "cancellation_reason")
        if intent["status"] not in PAYMENT_CANCELABLE:
            raise invalid(
                f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. Only a "
                "PaymentIntent with one of the following statuses may be canceled: "
                "requires_payment_method, requires_capture, requires_confirmation, requires_action, "
                "processing.",
                code="payment_intent_unexpected_state",
                payment_intent=copy.deepcopy(intent),
            )
        intent.update(status="canceled", cancellation_reason=reason, canceled_at=self.now, next_action=None)
        self._emit("payment_intent.canceled", intent)
        return intent

    # -- charges, refunds, disputes -----------------------------------------------------------

    def _charge(self, intent: dict, method: dict, failure_code: str | None, decline_code: str | None) -> dict:
        paid = failure_code is None
        outcome = (
            {
                "network_status": "approved_by_network",
                "seller_message": "Payment complete.",
                "type": "authorized",
            }
            if paid
            else {
                "network_status": "declined_by_network",
                "reason": decline_code,
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            }
        )
        return (
            {
                "id": new_id("ch"),
                "object": "charge",
                "amount": intent["amount"],
                "amount_captured": intent["amount"] if paid else 0,
                "amount_refunded": 0,
                "balance_transaction": None,  # set once the (asynchronous) capture completes
                "billing_details": copy.deepcopy(method["billing_details"]),
                "calculated_statement_descriptor": "STRIPE DOUBLE",
                "captured": paid,
                "created": self.now,
                "currency": intent["currency"],
                "customer": intent["customer"],
                "description": intent["description"],
                "disputed": False,
                "failure_code": failure_code,
                "failure_message": None if paid else DECLINE_MESSAGES[decline_code],
                "fraud_details": {},
                "livemode": False,
                "metadata": copy.deepcopy(intent["metadata"]),
                "outcome": _nulls("advice_code network_advice_code network_decline_code reason")
                | {"risk_level": "normal", "risk_score": 20}
                | outcome,
                "paid": paid,
                "payment_intent": intent["id"],
                "payment_method": method["id"],
                "payment_method_details": {
                    "card": self._charged_card(method, intent["amount"]),
                    "type": "card",
                },
                "receipt_email": intent["receipt_email"],
                "receipt_url": f"https://pay.stripe.com/receipts/payment/{new_id('r', 40)[2:]}"
                if paid
                else None,
                "refunded": False,
                "statement_descriptor_suffix": intent["statement_descriptor_suffix"],
                "status": "succeeded" if paid else "failed",
            }
            | _nulls(
                "application application_fee application_fee_amount failure_balance_transaction on_behalf_of "
                "receipt_number review shipping source source_transfer statement_descriptor transfer_data "
                "transfer_group"
            )
        )

    @staticmethod
    def _charged_card(method: dict, amount: int) -> dict:
        card = method["card"]
        same = ("brand", "checks", "country", "exp_month", "exp_year", "fingerprint", "funding", "last4")
        return (
            {k: copy.deepcopy(card[k]) for k in same}
            | {
                "amount_authorized": amount,
                "extended_authorization": {"status": "disabled"},
                "incremental_authorization": {"status": "unavailable"},
                "multicapture": {"status": "unavailable"},
                "network": card["brand"],
                "network_token": {"used": False},
                "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                "regulated_status": "unregulated",
            }
            | _nulls("authorization_code installments mandate network_transaction_id three_d_secure wallet")
        )

    def create_refund(self, params: dict) -> dict:
        self._only(params, "payment_intent amount reason metadata")
        if "payment_intent" not in params:
            raise invalid("Missing required param: payment_intent.", "payment_intent", "parameter_missing")
        intent = self._object(params["payment_intent"], "pi", "payment_intent")
        if params.get("reason") not in (None, *REFUND_REASONS):
            raise invalid(f"Invalid reason: {params['reason']}", "reason")
        amount = self._integer(params, "amount") if "amount" in params else None
        return self._refund(intent, amount, params.get("reason"), self._metadata(params))

    def _refund(self, intent: dict, amount: int | None, reason: str | None, metadata: dict) -> dict:
        if intent["status"] != "succeeded":
            raise invalid(f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.")
        charge = self._objects[intent["latest_charge"]]
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = left if amount is None else amount
        if not 0 < amount <= left:
            raise invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})", "amount"
            )
        refund = self._store(
            {
                "id": new_id("re"),
                "object": "refund",
                "amount": amount,
                "balance_transaction": new_id("txn"),
                "charge": charge["id"],
                "created": self.now,
                "currency": charge["currency"],
                "destination_details": {
                    "card": {
                        "reference_status": "pending",
                        "reference_type": "acquirer_reference_number",
                        "type": "refund",
                    },
                    "type": "card",
                },
                "metadata": metadata,
                "payment_intent": intent["id"],
                "reason": reason,
                "status": "succeeded",
            }
            | _nulls("receipt_number source_transfer_reversal transfer_reversal")
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._emit("charge.refunded", charge)
        self._emit("refund.created", refund)
        return refund

    def _dispute(self, charge: dict, amount: int, reason: str) -> dict:
        card = charge["payment_method_details"]["card"]
        return {
            "id": new_id("dp"),
            "object": "dispute",
            "amount": amount,
            "balance_transactions": [],
            "charge": charge["id"],
            "created": self.now,
            "currency": charge["currency"],
            "enhanced_eligibility_types": [],
            "evidence": _nulls(EVIDENCE_FIELDS) | {"enhanced_evidence": {}},
            "evidence_details": {
                "due_by": self.now + 7 * 24 * 60 * 60,
                "enhanced_eligibility": {},
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "payment_method_details": {
                "card": {"brand": card["brand"], "case_type": "chargeback", "network": card["network"]}
                | {"network_reason_code": "10.4"},
                "type": "card",
            },
            "reason": reason,
            "status": "needs_response",
        }

    # -- setup intents ------------------------------------------------------------------------

    def create_setup_intent(self, params: dict) -> dict:
        self._only(
            params,
            "customer usage metadata description automatic_payment_methods payment_method_types "
            "payment_method confirm return_url",
        )
        customer = self._customer(params)
        if params.get("usage", "off_session") not in ("on_session", "off_session"):
            raise invalid(f"Invalid usage: {params['usage']}", "usage")
        automatic, types = self._payment_method_choice(params)
        seti_id = new_id("seti")
        intent = {
            "id": seti_id,
            "object": "setup_intent",
            "automatic_payment_methods": automatic,
            "client_secret": f"{seti_id}_secret_{new_id('s', 32)[2:]}",
            "created": self.now,
            "customer": customer,
            "description": params.get("description"),
            "livemode": False,
            "metadata": self._metadata(params),
            "payment_method_configuration_details": {"id": "pmc_double", "parent": None}
            if automatic
            else None,
            "payment_method_options": {
                "card": {"request_three_d_secure": "automatic"} | _nulls("mandate_options network")
            },
            "payment_method_types": types,
            "status": "requires_payment_method",
            "usage": params.get("usage", "off_session"),
        } | _nulls(
            "application cancellation_reason excluded_payment_method_types flow_directions last_setup_error "
            "latest_attempt mandate next_action on_behalf_of payment_method single_use_mandate"
        )
        confirm = self._flag(params, "confirm")
        if confirm and not params.get("payment_method"):
            raise invalid(
                "Confirming at creation needs a payment_method.", "payment_method", "parameter_missing"
            )
        if confirm:
            self._needs_return_url(intent, params)
        if params.get("payment_method"):
            intent["payment_method"] = self._usable_payment_method(params["payment_method"], customer)["id"]
            intent["status"] = "requires_confirmation"
        self._emit("setup_intent.created", self._store(intent))
        if confirm:
            self._confirm_setup(intent, None, from_server=True)
        return intent

    def retrieve_setup_intent(self, params: dict, id: str) -> dict:
        self._only(params, "client_secret")
        return self._object(id, "seti")

    def confirm_setup_intent(self, params: dict, id: str) -> dict:
        self._only(params, "payment_method return_url")
        intent = self._object(id, "seti")
        if intent["status"] in CONFIRMABLE:
            self._needs_return_url(intent, params)
        self._confirm_setup(intent, params.get("payment_method"), from_server=True)
        return intent

    def _confirm_setup(self, intent: dict, payment_method: str | None, from_server: bool) -> None:
        if intent["status"] not in CONFIRMABLE:
            raise invalid(
                f"You cannot confirm this SetupIntent because it has a status of {intent['status']}.",
                code="setup_intent_unexpected_state",
                setup_intent=copy.deepcopy(intent),
            )
        if payment_method:
            intent["payment_method"] = self._usable_payment_method(payment_method, intent["customer"])["id"]
        if intent["payment_method"] is None:
            raise invalid(
                "You cannot confirm this SetupIntent because it's missing a payment method.", "payment_method"
            )
        method = self._objects[intent["payment_method"]]
        card = self._cards[method["id"]]
        if card.declines_setup:
            self._setup_failed(intent, method, "card_declined", card.decline_code, from_server)
        elif card.requires_authentication:
            intent.update(status="requires_action", next_action=_three_d_secure(), last_setup_error=None)
            self._emit("setup_intent.requires_action", intent)
        else:
            self._setup_succeeded(intent, method)

    def _setup_succeeded(self, intent: dict, method: dict) -> None:
        intent.update(status="succeeded", last_setup_error=None, next_action=None)
        if intent["customer"] and method["customer"] is None:
            self._attach(method, intent["customer"])
        self._emit("setup_intent.succeeded", intent)

    def _setup_failed(self, intent, method, code, decline_code, from_server=False) -> None:
        error = self._card_error(code, decline_code, payment_method=copy.deepcopy(method))
        if code == "setup_intent_authentication_failure":
            error["type"] = "invalid_request_error"
            error["message"] = (
                "The latest attempt to set up the payment method has failed because authentication failed."
            )
        intent.update(
            status="requires_payment_method", last_setup_error=error, payment_method=None, next_action=None
        )
        self._emit("setup_intent.setup_failed", intent)
        if from_server:
            raise StripeFailure(402, error | {"setup_intent": copy.deepcopy(intent)}, stored=True)

    def cancel_setup_intent(self, params: dict, id: str) -> dict:
        self._only(params, "cancellation_reason")
        intent = self._object(id, "seti")
        reason = params.get("cancellation_reason")
        if reason not in (None, *SETUP_CANCELLATION_REASONS):
            raise invalid(f"Invalid cancellation_reason: {reason}", "cancellation_reason")
        if intent["status"] not in CONFIRMABLE:
            raise invalid(
                f"You cannot cancel this SetupIntent because it has a status of {intent['status']}.",
                code="setup_intent_unexpected_state",
                setup_intent=copy.deepcopy(intent),
            )
        intent.update(status="canceled", cancellation_reason=reason, next_action=None)
        self._emit("setup_intent.canceled", intent)
        return intent


EVIDENCE_FIELDS = (
    "access_activity_log billing_address cancellation_policy cancellation_policy_disclosure "
    "cancellation_rebuttal customer_communication customer_email_address customer_name "
    "customer_purchase_ip customer_signature duplicate_charge_documentation duplicate_charge_explanation "
    "duplicate_charge_id product_description receipt refund_policy refund_policy_disclosure "
    "refund_refusal_explanation service_date service_documentation shipping_address shipping_carrier "
    "shipping_date shipping_documentation shipping_tracking_number uncategorized_file uncategorized_text"
)


def _three_d_secure() -> dict:
    """The next_action Stripe.js carries out: 3D Secure in the customer's browser."""
    return {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {
            "type": "three_d_secure_redirect",
            "stripe_js": "https://hooks.stripe.com/3d_secure_2/hosted",
            "source": new_id("payatt"),
        },
    }


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0, so every answer ends its connection: a lost answer is a socket closed unanswered."""

    server_version = "stripe-double"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        encoded = self.rfile.read(length).decode() if length else url.query
        double: StripeDouble = self.server.double
        reply = double.handle(method, url.path, encoded, self.headers)
        if reply is None:
            self.close_connection = True
            return
        with double._lock:
            double.responses.append((method, url.path, reply.status, copy.deepcopy(reply.body)))
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "Request-Id": new_id("req", 14),
            "Stripe-Version": self.headers.get("Stripe-Version") or stripe.api_version,
        }
        if self.headers.get("Idempotency-Key"):
            headers["Idempotency-Key"] = self.headers["Idempotency-Key"]
        for name, value in (headers | reply.headers).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        """Quiet: pytest shows what matters."""
