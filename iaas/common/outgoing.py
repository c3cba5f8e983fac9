"""Every HTTP request the app sends to an address a customer gave us goes through here.

A webhook URL is the customer's, so without care it points our servers at our own
network: the database, the cloud's metadata service, an admin port on loopback. The
rule (ARCHITECTURE.md, "Pitfalls we know of") is that we only talk to globally routable
addresses, judged on the address actually connected to: the name is resolved once, every
address it resolves to is vetted, the connection goes to a vetted address (TLS still
for the name), and nothing in between may change the destination: no proxy from the
environment, no redirects, no retries. Timeouts and a bounded read keep a slow or
hostile receiver from holding a worker.

``check_url`` judges a URL when it is registered; ``post`` judges it again when it sends,
because what a name resolves to can change in between (DNS rebinding)."""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import certifi
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util.ssl_ import create_urllib3_context
from urllib3.util.ssl_match_hostname import CertificateError

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
USER_AGENT = "iaas-outgoing/1"


class UnsafeURL(ValueError):
    """A URL we will not send to. ``reason`` is short and safe to show to the customer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutgoingError(Exception):
    """A request that got no status line back. ``reason`` is short ("timeout",
    "connection refused", "TLS: ...") and never holds the request's headers or body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefusedAddress(OutgoingError):
    """At send time the name resolved to an address we do not talk to: nothing was sent."""


class RefusedURL(OutgoingError):
    """At send time the URL itself is no longer acceptable (say, http:// once https is
    required): nothing was sent. Raised by ``post`` so that a caller handles one family of
    errors; ``check_url`` raises ``UnsafeURL`` for the same reasons at registration."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes  # at most IAAS_OUTGOING_MAX_RESPONSE_BYTES, undecoded
    truncated: bool  # the body is incomplete: over the limit, or cut by the deadline
    duration_ms: int
    address: str  # the IP actually connected to


# --- Which addresses we talk to --------------------------------------------------------

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Services that answer only from inside a cloud and hand out credentials. Most sit in
# ranges refused anyway; Azure's wireserver (168.63.129.16) is a public address that is
# only reachable from inside Azure, so it must be named.
CLOUD_METADATA = frozenset(
    ipaddress.ip_address(ip)
    for ip in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean...
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "168.63.129.16",  # Azure wireserver
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)

# Checked in order, first match wins: the specific name before the wider range.
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("192.88.99.0/24"), "reserved"),  # the retired 6to4 relay anycast
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("fc00::/7"), "private"),  # unique local addresses
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("100::/64"), "reserved"),  # discard-only
    (_V6("64:ff9b:1::/48"), "NAT64 local-use"),
)
_IPV4_MAPPED = _V6("::ffff:0:0/96")
_IPV4_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_GLOBAL_UNICAST_V6 = _V6("2000::/3")


def address_refusal(ip: str) -> str | None:
    """None when we may connect to ``ip``, else why not, in a few words.

    Allowed means globally routable. Python's ``is_global`` is only the last word: the
    IPv6 forms that carry an IPv4 address inside (mapped, compatible, 6to4, Teredo,
    NAT64) are judged by the address they lead to, and the names are ours."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # an IPv6 zone says nothing here
    except ValueError:
        return "not an IP address"
    if address in CLOUD_METADATA:
        return "cloud metadata"
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_refusal(address)
    return _v6_refusal(address)


def _v4_refusal(address: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_RANGES:
        if address in network:
            return reason
    return None if address.is_global else "reserved"


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def _v6_refusal(address: ipaddress.IPv6Address) -> str | None:
    if address == ipaddress.IPv6Address("::"):
        return "unspecified"
    if address == ipaddress.IPv6Address("::1"):
        return "loopback"
    if address in _IPV4_MAPPED:
        # A socket connects to the IPv4 address itself: judge that one.
        inner = address_refusal(str(address.ipv4_mapped))
        return f"IPv4-mapped {inner}" if inner else None
    if address in _IPV4_COMPATIBLE:
        inner = address_refusal(str(_embedded_v4(address)))
        return f"IPv4-compatible {inner}" if inner else "IPv4-compatible (deprecated)"
    if address in _NAT64:
        # What a DNS64 resolver hands out on an IPv6-only network for an IPv4-only name:
        # fine when the IPv4 address is, since the NAT64 gateway goes there.
        inner = address_refusal(str(_embedded_v4(address)))
        return f"NAT64 {inner}" if inner else None
    if address.sixtofour is not None:
        # 6to4 and Teredo tunnel to an IPv4 address of the sender's choosing; both are
        # retired and no webhook receiver needs them.
        inner = address_refusal(str(address.sixtofour))
        return f"6to4 {inner}" if inner else "6to4 (deprecated)"
    if address.teredo is not None:
        return "Teredo"
    for network, reason in _V6_RANGES:
        if address in network:
            return reason
    if address not in _GLOBAL_UNICAST_V6 or not address.is_global:
        return "reserved"
    return None


def _refusal_here(ip: str) -> str | None:
    """address_refusal under the settings: IAAS_OUTGOING_ALLOW_PRIVATE (development and
    the test suite, whose receivers listen on loopback) lets everything through but the
    cloud's metadata service, which hands out credentials wherever we run."""
    reason = address_refusal(ip)
    if reason and settings.IAAS_OUTGOING_ALLOW_PRIVATE and "cloud metadata" not in reason:
        return None
    return reason


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order, without repeats.
    Raises OSError (socket.gaierror) when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- URLs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    request_target: str  # path and query, as sent on the request line
    literal_ip: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>[/?#].*)?", re.S)
_AUTHORITY = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]*))?")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _parse(url: str) -> _Target:
    """The URL split into what we connect to and what we send, or UnsafeURL. One parser,
    ours, for both judging and sending, so the two can never disagree about the host."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURL(
            "the URL must be ASCII without spaces (an international name in its xn-- form, "
            "the path percent-encoded)"
        )
    match = _URL.fullmatch(url)
    if not match:
        raise UnsafeURL("not an absolute URL")
    scheme = match["scheme"].lower()
    allowed = ("https",) if settings.IAAS_OUTGOING_REQUIRE_HTTPS else ("https", "http")
    if scheme not in allowed:
        raise UnsafeURL("the URL must start with " + " or ".join(f"{s}://" for s in allowed))
    authority = match["authority"]
    if "@" in authority:
        raise UnsafeURL("the URL must not carry a user name or password")
    parts = _AUTHORITY.fullmatch(authority)
    if not parts or not parts["host"]:
        raise UnsafeURL("the URL has no host")
    port_text = parts["port"]
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    if not 1 <= port <= 65535 or (port_text and len(port_text) > 5):
        raise UnsafeURL("the port must be a number from 1 to 65535")
    host, literal_ip = _host(parts["host"].lower())
    rest = match["rest"] or "/"
    request_target = rest.split("#", 1)[0]  # the fragment is the client's, never sent
    if not request_target.startswith("/"):
        request_target = "/" + request_target  # "https://h?x" asks for "/?x"
    return _Target(scheme, host, port, request_target, literal_ip)


def _host(host: str) -> tuple[str, bool]:
    if host.startswith("["):
        literal = host[1:-1]
        try:
            # A zone (fe80::1%eth0) names one of our interfaces: never a customer's to pick.
            if "%" in literal:
                raise ValueError(literal)
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise UnsafeURL("the host is not a valid IPv6 address") from None
        return literal, True  # as written, so a refusal quotes the customer's spelling
    try:
        ipaddress.IPv4Address(host)  # dotted quad only; other spellings resolve as names
    except ValueError:
        pass
    else:
        return host, True
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise UnsafeURL("the host is not a valid host name")
    # Numeric spellings the resolver reads as an address (2130706433, 0x7f000001, 127.1)
    # pass as names here: what they resolve to is vetted like any other name's.
    return host, False


def check_url(url: str) -> None:
    """At registration: raise UnsafeURL for anything that can be judged now. A name that
    does not resolve yet is accepted: ``post`` judges it again when it sends."""
    target = _parse(url)
    if target.literal_ip:
        reason = _refusal_here(target.host)
        if reason:
            raise UnsafeURL(f"the address is not allowed ({reason})")
        return
    try:
        addresses = resolve(target.host, target.port)
    except (OSError, UnicodeError):
        return
    for ip in addresses:
        reason = _refusal_here(ip)
        if reason:
            # The customer sees the kind of address, not which: our resolver may see
            # names (and addresses) that they should not learn from us.
            raise UnsafeURL(f"the host resolves to an address that is not allowed ({reason})")


# --- Sending ----------------------------------------------------------------------------

_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def post(url: str, *, body: bytes, headers: dict[str, str], timeout: float | None = None) -> Response:
    """POST ``body`` to ``url`` and return what came back, a 3xx included (never
    followed). Raises OutgoingError (RefusedAddress, RefusedURL) when no status line
    came back; ``timeout`` (seconds) bounds the whole exchange, resolving included, and
    defaults to IAAS_OUTGOING_TIMEOUT."""
    _check_headers(headers)
    try:
        target = _parse(url)
    except UnsafeURL as refused:
        raise RefusedURL(f"URL refused: {refused.reason}") from None
    total = settings.IAAS_OUTGOING_TIMEOUT if timeout is None else timeout
    started = time.monotonic()
    address = _vetted_address(target)
    remaining = total - (time.monotonic() - started)
    if remaining <= 0:
        raise OutgoingError("timeout")
    deadline = _Deadline(remaining)
    connection: HTTPConnection | None = None
    try:
        connection = _connection(
            target, address, deadline, min(settings.IAAS_OUTGOING_CONNECT_TIMEOUT, remaining)
        )
        try:
            connection.connect()
            connection.timeout = max(deadline.remaining(), 0.001)  # each read; the deadline bounds all
            connection.request(
                "POST",
                target.request_target,
                body=body,
                headers=_request_headers(target, headers),
                preload_content=False,
                decode_content=False,
            )
            response = connection.getresponse()
        except Exception as error:  # every failure to get a status line is one OutgoingError
            raise OutgoingError(_reason(error, deadline)) from None
        if deadline.expired:
            # The headers were cut short (http.client takes the end of the stream for the
            # end of the headers): no trustworthy answer.
            raise OutgoingError("timeout")
        payload, truncated = _read_bounded(response, settings.IAAS_OUTGOING_MAX_RESPONSE_BYTES)
        return Response(
            status=response.status,
            headers={name.lower(): response.headers[name] for name in response.headers},
            body=payload,
            truncated=truncated,
            duration_ms=int((time.monotonic() - started) * 1000),
            address=address,
        )
    finally:
        deadline.finish()
        if connection is not None:
            connection.close()


def _check_headers(headers: dict[str, str]) -> None:
    # Errors here are ours (the caller builds the headers), so they are ValueErrors; they
    # never repeat a value, which may be a signature.
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ValueError("outgoing header names must be tokens and values single lines")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ValueError(f"the {name} header is set by iaas.common.outgoing")


def _request_headers(target: _Target, headers: dict[str, str]) -> dict[str, str]:
    sent = dict(headers)
    if not any(name.lower() == "user-agent" for name in sent):
        sent["User-Agent"] = USER_AGENT
    # The Host we resolved, not the address we connect to; one request per connection.
    sent["Host"] = target.host_header
    sent["Connection"] = "close"
    return sent


def _vetted_address(target: _Target) -> str:
    """Resolve once, refuse the name if any of its addresses is refused (a rebinding name
    may answer with a mix), and return the first: the one we connect to."""
    if target.literal_ip:
        addresses = [target.host]
    else:
        try:
            addresses = resolve(target.host, target.port)
        except (OSError, UnicodeError):
            raise OutgoingError("could not resolve the host") from None
        if not addresses:
            raise OutgoingError("could not resolve the host")
    for ip in addresses:
        reason = _refusal_here(ip)
        if reason and target.literal_ip:
            raise RefusedAddress(f"refused address {ip} ({reason})")
        if reason:
            # The customer reads this reason (the attempt's error): what our resolver
            # answers for their name stays in our log, or a CNAME could map our network.
            logger.warning("refused to send to %s: it resolves to %s (%s)", target.host, ip, reason)
            raise RefusedAddress(f"the host resolves to an address that is not allowed ({reason})")
    return addresses[0]


@functools.lru_cache(maxsize=4)
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    # One context per bundle: loading certifi's bundle for every request costs more than
    # the request. urllib3 checks the name itself (assert_hostname), as the
    # certificate's subject alternative names, never its common name.
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.check_hostname = False
    context.hostname_checks_common_name = False
    context.load_verify_locations(cafile=ca_bundle)
    return context


class _Deadline:
    """The whole exchange's time limit. A socket timeout bounds each read, not their sum:
    a receiver sending a byte a second would hold us for hours. When the time is up a
    timer shuts the socket down, which ends whatever read or write is waiting on it."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self._ends - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        # A duplicate of the descriptor: TLS takes over (detaches) the original socket
        # object, and shutdown() on any descriptor of a socket ends it for all.
        with self._lock:
            self._socket = sock.dup()
            if self.expired:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):  # already closed by the other end
                self._socket.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class _WatchedHTTPConnection(HTTPConnection):
    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


def _connection(target: _Target, address: str, deadline: _Deadline, connect_timeout: float) -> HTTPConnection:
    """A connection to ``address`` (never to the name: nothing resolves it again), TLS
    checked against the name. urllib3's connection classes read no proxy settings."""
    connection: HTTPConnection
    if target.scheme == "https":
        connection = _WatchedHTTPSConnection(
            address,
            target.port,
            timeout=connect_timeout,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ssl_context=_tls_context(settings.IAAS_OUTGOING_CA_BUNDLE or certifi.where()),
        )
    else:
        connection = _WatchedHTTPConnection(address, target.port, timeout=connect_timeout)
    connection.deadline = deadline
    return connection


def _read_bounded(response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether there was more (or the rest was
    lost to the deadline or a broken connection: the status line is what counts)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = response.read(min(65536, limit + 1 - size), decode_content=False)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
    except Exception:  # a body cut short is still a response
        return b"".join(chunks)[:limit], True
    return b"".join(chunks)[:limit], True


def _reason(error: BaseException, deadline: _Deadline) -> str:
    """A short, fixed description of why no status line came back: from the exception's
    kind, never from its text (which may quote what we sent), TLS messages aside."""
    if deadline.expired:
        return "timeout"
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    # The innermost cause is the most precise: urllib3 wraps a refused connection in
    # NewConnectionError, which is (for backwards compatibility) a timeout error.
    for cause in reversed(chain):
        reason = _reason_of(cause)
        if reason:
            return reason
    return f"request failed ({type(error).__name__})"


def _reason_of(error: BaseException) -> str | None:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, CertificateError):
        # urllib3's name check: the names the certificate is for, and ours.
        return f"TLS: certificate verify failed: {str(error)[:200]}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {(error.verify_message or 'unknown')[:200]}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {(error.reason or 'handshake failed')[:200]}"
    if isinstance(error, socket.timeout | Urllib3TimeoutError):
        return "timeout"
    if isinstance(error, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, BrokenPipeError):
        return "connection closed while sending"
    if isinstance(error, http.client.HTTPException):
        return "invalid HTTP response"
    if isinstance(error, OSError) and error.errno is not None:
        return f"connection failed: {os.strerror(error.errno)}"
    return None
