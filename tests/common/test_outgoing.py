"""Outgoing requests: only to globally routable addresses, judged on the address actually
connected to; TLS for the name; no proxy, no redirect; bounded in time and in size.

Everything runs on 127.0.0.1: real receivers for what must arrive, and for what must not,
a loopback listener that every connection is diverted to (``divert``), so a refused
address that got through would show up there instead of leaving the machine."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
import urllib3.util.connection

from iaas.common import outgoing

REPO = Path(__file__).resolve().parents[2]
NAME = "hooks.example.test"


# --- Receivers and listeners ------------------------------------------------------------


@dataclass
class Seen:
    request_line: str
    headers: dict[str, str]
    body: bytes


def read_request(conn: socket.socket) -> Seen:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("closed before the request's head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Seen(request_line, headers, body)


Answer = Callable[[socket.socket, Seen, threading.Event], None]


@dataclass
class Receiver:
    """An HTTP(S) server on 127.0.0.1 answering each request with ``answer``."""

    answer: Answer
    tls: ssl.SSLContext | None = None
    requests: list[Seen] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _context: self.server_names.append(name)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = read_request(conn)
            self.requests.append(request)
            self.answer(conn, request, self.stopped)
        except (OSError, ValueError):
            pass  # the client went away (as the tests make it): nothing to answer
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(timeout=2)


class Listener:
    """A socket listening on 127.0.0.1 that accepts nothing. The kernel completes a
    loopback connection before connect() returns, so one made is pending here at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.attempts: list[tuple[str, int]] = []

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


def ok(conn: socket.socket, request: Seen, stopped: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Seen: 1\r\nConnection: close\r\n\r\nreceived")


def never(conn: socket.socket, request: Seen, stopped: threading.Event) -> None:
    stopped.wait(10)


def drip_for(conn: socket.socket, stopped: threading.Event, seconds: float = 3) -> None:
    """A byte every 50 ms for a few seconds: were the deadline not kept, a test fails
    (rather than hangs) when this ends."""
    ends = time.monotonic() + seconds
    while not stopped.wait(0.05) and time.monotonic() < ends:
        conn.sendall(b"z")


@pytest.fixture
def serve():
    receivers: list[Receiver] = []

    def start(answer: Answer, tls: ssl.SSLContext | None = None) -> Receiver:
        receivers.append(Receiver(answer, tls))
        return receivers[-1]

    yield start
    for receiver in receivers:
        receiver.close()


@pytest.fixture
def listener():
    sock = Listener()
    yield sock
    sock.close()


@pytest.fixture
def divert(monkeypatch):
    """Every connection urllib3 opens goes to a loopback listener, whatever address it was
    for, and is recorded: nothing leaves the machine, and nothing goes unseen."""
    sink = Listener()
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        sink.attempts.append(address)
        return real(("127.0.0.1", sink.port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    yield sink
    sink.close()


@pytest.fixture
def public_only(settings):
    """Production's rule: the test settings let loopback through for the receivers."""
    settings.IAAS_OUTGOING_ALLOW_PRIVATE = False


def resolves_to(monkeypatch, *answers: list[str]) -> list[tuple[str, int]]:
    """Make ``outgoing.resolve`` answer each call with the next list (the last one
    repeats); returns the calls made."""
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return answers[min(len(calls), len(answers)) - 1]

    monkeypatch.setattr(outgoing, "resolve", resolve)
    return calls


def url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


# --- Which addresses ---------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("100.127.255.254", "shared address space (CGNAT)"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("168.63.129.16", "cloud metadata"),  # public, yet Azure's wireserver
    ("100.100.100.200", "cloud metadata"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
    ("::ffff:100.64.0.1", "IPv4-mapped shared address space (CGNAT)"),
    ("::10.0.0.1", "IPv4-compatible private"),
    ("::127.0.0.1", "IPv4-compatible loopback"),
    ("::8.8.8.8", "IPv4-compatible (deprecated)"),
    ("2002:a00:1::1", "6to4 private"),  # 6to4 around 10.0.0.1
    ("2002:7f00:1::1", "6to4 loopback"),  # around 127.0.0.1
    ("2002:808:808::1", "6to4 (deprecated)"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001::1", "Teredo"),
    ("64:ff9b::10.0.0.1", "NAT64 private"),
    ("64:ff9b::127.0.0.1", "NAT64 loopback"),
    ("64:ff9b::169.254.169.254", "NAT64 cloud metadata"),
    ("64:ff9b:1::1", "NAT64 local-use"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::101", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "reserved"),
    ("2001:2::1", "reserved"),  # benchmarking
    ("4000::1", "reserved"),  # outside global unicast
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
]


@pytest.mark.parametrize(("ip", "reason"), REFUSED)
def test_address_refusal_names_the_kind_of_address(ip, reason):
    assert outgoing.address_refusal(ip) == reason


@pytest.mark.parametrize("ip", ALLOWED)
def test_globally_routable_addresses_are_allowed(ip):
    assert outgoing.address_refusal(ip) is None


def test_an_ipv6_zone_does_not_hide_a_link_local_address():
    assert outgoing.address_refusal("fe80::1%lo") == "link-local"


def test_a_string_that_is_no_address_is_refused():
    assert outgoing.address_refusal("localhost") == "not an IP address"


@pytest.mark.usefixtures("public_only")
@pytest.mark.parametrize(("ip", "reason"), REFUSED)
def test_check_url_refuses_a_literal_address(ip, reason):
    with pytest.raises(outgoing.UnsafeURL) as refused:
        outgoing.check_url(f"http://{url_host(ip)}/hook")
    assert refused.value.reason == f"the address is not allowed ({reason})"


@pytest.mark.usefixtures("public_only")
@pytest.mark.parametrize(("ip", "reason"), REFUSED)
def test_check_url_refuses_a_name_that_resolves_to_the_address(ip, reason, monkeypatch):
    resolves_to(monkeypatch, [ip])
    with pytest.raises(outgoing.UnsafeURL) as refused:
        outgoing.check_url(f"https://{NAME}/hook")
    assert refused.value.reason == f"the host resolves to an address that is not allowed ({reason})"
    assert ip not in refused.value.reason  # the kind is the customer's to know, not the address


@pytest.mark.usefixtures("public_only")
@pytest.mark.parametrize("literal", [True, False], ids=["literal", "name"])
@pytest.mark.parametrize(("ip", "reason"), REFUSED)
def test_post_refuses_the_address_before_any_connection(ip, reason, literal, divert, monkeypatch):
    calls = resolves_to(monkeypatch, [ip])
    url = f"http://{url_host(ip) if literal else NAME}:8080/hook"
    with pytest.raises(outgoing.RefusedAddress) as refused:
        outgoing.post(url, body=b"{}", headers={"Webhook-Signature": "v1,s3cret"}, timeout=0.5)
    if literal:  # the customer wrote that address
        assert refused.value.reason == f"refused address {ip} ({reason})"
    else:  # what our resolver answered for their name is not theirs to read
        assert refused.value.reason == f"the host resolves to an address that is not allowed ({reason})"
        assert ip not in refused.value.reason
    assert "s3cret" not in str(refused.value)
    assert divert.attempts == []
    assert divert.connections() == 0
    assert len(calls) == (0 if literal else 1)


@pytest.mark.usefixtures("public_only")
def test_the_diversion_does_see_a_connection_to_an_allowed_address(divert):
    """The control for the test above: an allowed address does get connected to (on the
    loopback listener, which never answers)."""
    with pytest.raises(outgoing.OutgoingError, match="timeout"):
        outgoing.post("http://8.8.8.8:8080/hook", body=b"{}", headers={}, timeout=0.3)
    assert divert.attempts == [("8.8.8.8", 8080)]
    assert divert.connections() == 1


@pytest.mark.usefixtures("public_only")
@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "0x7f.1"])
def test_numeric_spellings_of_loopback_are_judged_by_what_they_resolve_to(host, divert):
    # The real resolver reads these as 127.0.0.1 (no network involved).
    with pytest.raises(outgoing.UnsafeURL, match=re.escape("not allowed (loopback)")):
        outgoing.check_url(f"http://{host}/hook")
    with pytest.raises(outgoing.RefusedAddress) as refused:
        outgoing.post(f"http://{host}:8080/hook", body=b"{}", headers={}, timeout=0.5)
    assert refused.value.reason == "the host resolves to an address that is not allowed (loopback)"
    assert divert.attempts == []
    assert divert.connections() == 0


@pytest.mark.usefixtures("public_only")
def test_a_name_with_one_refused_address_among_allowed_ones_is_refused(divert, monkeypatch):
    resolves_to(monkeypatch, ["8.8.8.8", "10.0.0.1"])
    with pytest.raises(outgoing.UnsafeURL):
        outgoing.check_url(f"https://{NAME}/hook")
    with pytest.raises(outgoing.RefusedAddress, match=re.escape("not allowed (private)")):
        outgoing.post(f"http://{NAME}/hook", body=b"{}", headers={}, timeout=0.5)
    assert divert.attempts == []


def test_the_metadata_service_stays_refused_when_private_addresses_are_allowed(settings, divert):
    assert settings.IAAS_OUTGOING_ALLOW_PRIVATE
    outgoing.check_url("http://10.0.0.1/hook")  # allowed here, as the test settings say
    with pytest.raises(outgoing.UnsafeURL, match="cloud metadata"):
        outgoing.check_url("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(outgoing.RefusedAddress, match="cloud metadata"):
        outgoing.post("http://[::ffff:169.254.169.254]/", body=b"", headers={}, timeout=0.5)
    assert divert.attempts == []


# --- DNS rebinding: judged again at send time, resolved once -----------------------------


@pytest.mark.usefixtures("public_only")
def test_a_name_that_rebinds_to_loopback_after_registration_is_refused_at_send_time(listener, monkeypatch):
    calls = resolves_to(monkeypatch, ["8.8.8.8"], ["127.0.0.1"])
    url = f"http://rebind.example.test:{listener.port}/hook"
    outgoing.check_url(url)  # public at registration
    with pytest.raises(outgoing.RefusedAddress, match=re.escape("not allowed (loopback)")):
        outgoing.post(url, body=b"{}", headers={}, timeout=0.5)
    assert len(calls) == 2
    assert listener.connections() == 0


def test_post_resolves_once_and_connects_to_the_address_it_vetted(serve, monkeypatch):
    receiver = serve(ok)
    # A second resolution would get an address nothing listens on; and the system resolver
    # must never be asked for the name either (urllib3 only parses the address given).
    calls = resolves_to(monkeypatch, ["127.0.0.1"], ["127.0.0.2"])
    asked: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert response.status == 200
    assert response.address == "127.0.0.1"
    assert calls == [(NAME, receiver.port)]
    assert NAME not in asked
    assert receiver.requests[0].headers["host"] == f"{NAME}:{receiver.port}"


def test_post_connects_to_the_first_address(serve, monkeypatch):
    receiver = serve(ok)
    resolves_to(monkeypatch, ["127.0.0.1", "127.0.0.2"])
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert response.address == "127.0.0.1"


# --- What is sent and what comes back -----------------------------------------------------


def test_post_sends_the_body_and_headers_and_returns_the_answer(serve, monkeypatch):
    receiver = serve(ok)
    resolves_to(monkeypatch, ["127.0.0.1"])
    response = outgoing.post(
        f"http://{NAME}:{receiver.port}/hooks/in?source=iaas#fragment",
        body=b'{"type": "wallet.topped_up"}',
        headers={"Content-Type": "application/json", "Webhook-Id": "msg_1"},
    )
    assert response == outgoing.Response(
        status=200,
        headers={"content-length": "8", "x-seen": "1", "connection": "close"},
        body=b"received",
        truncated=False,
        duration_ms=response.duration_ms,
        address="127.0.0.1",
    )
    assert 0 <= response.duration_ms < 5000
    (seen,) = receiver.requests
    assert seen.request_line == "POST /hooks/in?source=iaas HTTP/1.1"
    assert seen.body == b'{"type": "wallet.topped_up"}'
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.headers["content-length"] == str(len(seen.body))
    assert seen.headers["user-agent"] == outgoing.USER_AGENT


def test_a_redirect_is_returned_never_followed(serve, listener, monkeypatch):
    elsewhere = f"http://127.0.0.1:{listener.port}/stolen"

    def redirect(conn, request, stopped):
        conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {elsewhere}\r\nContent-Length: 0\r\n\r\n".encode())

    receiver = serve(redirect)
    resolves_to(monkeypatch, ["127.0.0.1"])
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert response.status == 302
    assert response.headers["location"] == elsewhere
    assert len(receiver.requests) == 1
    assert listener.connections() == 0


def test_proxy_settings_in_the_environment_divert_nothing(serve, listener, monkeypatch):
    proxy = f"http://127.0.0.1:{listener.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    receiver = serve(ok)
    resolves_to(monkeypatch, ["127.0.0.1"])
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert response.status == 200
    assert receiver.requests[0].request_line == "POST /hook HTTP/1.1"  # not a proxy's absolute form
    assert listener.connections() == 0


def test_a_huge_response_is_read_up_to_the_limit_and_no_further(serve, monkeypatch, settings):
    size = 5 * 1024 * 1024

    def flood(conn, request, stopped):
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            conn.sendall(chunk)

    receiver = serve(flood)
    resolves_to(monkeypatch, ["127.0.0.1"])
    started = time.monotonic()
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert time.monotonic() - started < 2
    assert settings.IAAS_OUTGOING_MAX_RESPONSE_BYTES == 16384
    assert response.status == 200
    assert response.body == b"x" * 16384
    assert response.truncated


@pytest.mark.parametrize(("length", "truncated"), [(99, False), (100, False), (101, True)])
def test_a_body_is_truncated_only_past_the_limit(length, truncated, serve, monkeypatch, settings):
    settings.IAAS_OUTGOING_MAX_RESPONSE_BYTES = 100

    def answer(conn, request, stopped):
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode() + b"y" * length)

    receiver = serve(answer)
    resolves_to(monkeypatch, ["127.0.0.1"])
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert response.body == b"y" * min(length, 100)
    assert response.truncated is truncated


# --- Failures -------------------------------------------------------------------------------


def test_a_receiver_that_never_answers_times_out_within_the_deadline(serve, monkeypatch):
    receiver = serve(never)
    resolves_to(monkeypatch, ["127.0.0.1"])
    started = time.monotonic()
    with pytest.raises(outgoing.OutgoingError) as failed:
        outgoing.post(
            f"http://{NAME}:{receiver.port}/hook",
            body=b"{}",
            headers={"Authorization": "Bearer s3cret"},
            timeout=0.5,
        )
    elapsed = time.monotonic() - started
    assert failed.value.reason == "timeout"
    assert "s3cret" not in str(failed.value)
    assert 0.4 <= elapsed < 1.5
    assert len(receiver.requests) == 1


def test_a_status_line_dripped_a_byte_at_a_time_is_cut_at_the_deadline(serve, monkeypatch):
    """Each byte comes well within any per-read timeout: only a deadline on the whole
    exchange stops this."""

    def drip(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        drip_for(conn, stopped)

    receiver = serve(drip)
    resolves_to(monkeypatch, ["127.0.0.1"])
    started = time.monotonic()
    with pytest.raises(outgoing.OutgoingError, match="timeout"):
        outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={}, timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_a_body_dripped_past_the_deadline_is_returned_cut_short(serve, monkeypatch):
    def drip(conn, request, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")
        drip_for(conn, stopped)

    receiver = serve(drip)
    resolves_to(monkeypatch, ["127.0.0.1"])
    started = time.monotonic()
    response = outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={}, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert response.status == 200
    assert response.truncated
    assert set(response.body) <= {ord("z")}


def test_a_refused_connection_is_an_outgoing_error(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    resolves_to(monkeypatch, ["127.0.0.1"])
    with pytest.raises(outgoing.OutgoingError) as failed:
        outgoing.post(f"http://{NAME}:{port}/hook", body=b"{}", headers={})
    assert failed.value.reason == "connection refused"
    assert not isinstance(failed.value, outgoing.RefusedAddress)


def test_a_connection_closed_without_an_answer_is_an_outgoing_error(serve, monkeypatch):
    receiver = serve(lambda conn, request, stopped: None)
    resolves_to(monkeypatch, ["127.0.0.1"])
    with pytest.raises(outgoing.OutgoingError, match="connection closed without a response"):
        outgoing.post(f"http://{NAME}:{receiver.port}/hook", body=b"{}", headers={})


def test_a_name_that_does_not_resolve_is_accepted_at_registration_and_fails_at_send_time(monkeypatch):
    def resolve(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(outgoing, "resolve", resolve)
    outgoing.check_url(f"https://{NAME}/hook")
    with pytest.raises(outgoing.OutgoingError) as failed:
        outgoing.post(f"https://{NAME}/hook", body=b"{}", headers={})
    assert failed.value.reason == "could not resolve the host"


def test_header_values_are_single_lines_and_never_repeated_in_the_error():
    with pytest.raises(ValueError, match="single lines") as refused:
        outgoing.post("http://127.0.0.1/", body=b"", headers={"X-Token": "s3cret\r\nX-Injected: 1"})
    assert "s3cret" not in str(refused.value)


def test_the_host_header_is_ours_to_set():
    with pytest.raises(ValueError, match="Host"):
        outgoing.post("http://127.0.0.1/", body=b"", headers={"Host": "internal.example"})


# --- TLS: to the address, for the name -----------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def trusted(ca, settings, tmp_path):
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    settings.IAAS_OUTGOING_CA_BUNDLE = str(bundle)


def tls_for(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


@pytest.mark.usefixtures("trusted")
def test_https_connects_to_the_vetted_address_with_tls_for_the_name(ca, serve, monkeypatch):
    receiver = serve(ok, tls=tls_for(ca, NAME))
    resolves_to(monkeypatch, ["127.0.0.1"])
    response = outgoing.post(f"https://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert response.status == 200
    assert response.body == b"received"
    assert response.address == "127.0.0.1"
    assert receiver.server_names == [NAME]  # SNI
    assert receiver.requests[0].headers["host"] == f"{NAME}:{receiver.port}"


@pytest.mark.usefixtures("trusted")
def test_a_certificate_for_another_name_fails(ca, serve, monkeypatch):
    receiver = serve(ok, tls=tls_for(ca, "other.example.test"))
    resolves_to(monkeypatch, ["127.0.0.1"])
    with pytest.raises(outgoing.OutgoingError) as failed:
        outgoing.post(f"https://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert failed.value.reason.startswith("TLS: ")
    assert NAME in failed.value.reason
    assert receiver.requests == []


def test_a_certificate_from_an_unknown_authority_fails(ca, serve, monkeypatch, settings):
    assert settings.IAAS_OUTGOING_CA_BUNDLE is None  # certifi's, which trustme's CA is not in
    receiver = serve(ok, tls=tls_for(ca, NAME))
    resolves_to(monkeypatch, ["127.0.0.1"])
    with pytest.raises(outgoing.OutgoingError) as failed:
        outgoing.post(f"https://{NAME}:{receiver.port}/hook", body=b"{}", headers={})
    assert failed.value.reason.startswith("TLS: certificate verify failed")
    assert receiver.requests == []


@pytest.mark.usefixtures("trusted")
def test_https_proxy_settings_divert_nothing_either(ca, serve, listener, monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{listener.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    receiver = serve(ok, tls=tls_for(ca, NAME))
    resolves_to(monkeypatch, ["127.0.0.1"])
    assert outgoing.post(f"https://{NAME}:{receiver.port}/", body=b"", headers={}).status == 200
    assert listener.connections() == 0


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.test/",
        "javascript:alert(1)",
        "hooks.example.test/hook",
        "//hooks.example.test/hook",
        "https://user:password@hooks.example.test/",
        "https://token@hooks.example.test/",
        "https:///hook",
        "https://:8443/hook",
        "https://hooks.example.test:0/",
        "https://hooks.example.test:65536/",
        "https://hooks.example.test:99999999/",
        "https://hooks.example.test:-1/",
        "https://hooks.example.test:http/",
        "https://hooks .example.test/",
        "https://hooks.example.test/a b",
        "https://hooks.example.test/\r\nX-Injected: 1",
        "https://bücher.example.test/",
        "https://[fe80::1%25eth0]/",
        "https://[hooks.example.test]/",
        "https://hooks..example.test/",
        "https://-hooks.example.test/",
        "https://" + "a" * 250 + ".test/",
        "https://hooks.example.test/" + "p" * (2001 - len("https://hooks.example.test/")),
    ],
)
def test_check_url_refuses_what_can_be_judged_at_registration(url, monkeypatch):
    calls = resolves_to(monkeypatch, ["8.8.8.8"])
    with pytest.raises(outgoing.UnsafeURL) as refused:
        outgoing.check_url(url)
    assert refused.value.reason
    assert calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.test/",
        "HTTPS://Hooks.Example.Test:8443/in/?a=1&b=%20#frag",
        "https://hooks.example.test.",
        "https://hooks.example.test/" + "p" * (2000 - len("https://hooks.example.test/")),
        "https://[2606:4700:4700::1111]/hook",
        "https://8.8.8.8/hook",
    ],
)
def test_check_url_accepts_public_https_urls(url, monkeypatch, public_only):
    resolves_to(monkeypatch, ["8.8.8.8"])
    outgoing.check_url(url)


def test_http_is_refused_where_https_is_required(settings, divert, monkeypatch):
    settings.IAAS_OUTGOING_REQUIRE_HTTPS = True
    resolves_to(monkeypatch, ["8.8.8.8"])
    with pytest.raises(outgoing.UnsafeURL, match="https://"):
        outgoing.check_url(f"http://{NAME}/hook")
    outgoing.check_url(f"https://{NAME}/hook")
    with pytest.raises(outgoing.RefusedURL, match="https://"):
        outgoing.post(f"http://{NAME}/hook", body=b"{}", headers={}, timeout=0.5)
    assert divert.attempts == []


def test_http_is_accepted_where_https_is_not_required(settings, monkeypatch):
    assert not settings.IAAS_OUTGOING_REQUIRE_HTTPS
    resolves_to(monkeypatch, ["8.8.8.8"])
    outgoing.check_url(f"http://{NAME}/hook")


# --- Settings ----------------------------------------------------------------------------------


def import_production_settings(**env: str) -> subprocess.CompletedProcess:
    from cryptography.fernet import Fernet

    environment = {k: v for k, v in os.environ.items() if not k.startswith("IAAS_OUTGOING_")}
    environment.update(
        SECRET_KEY="k" * 30 + "Q7#a" * 10,
        ALLOWED_HOSTS="billing.example.com",
        IAAS_SECRET_KEYS=Fernet.generate_key().decode(),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", "import iaas.settings.production as s; print(s.IAAS_OUTGOING_REQUIRE_HTTPS)"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_requires_https_and_refuses_to_allow_private_addresses():
    result = import_production_settings()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    result = import_production_settings(IAAS_OUTGOING_ALLOW_PRIVATE="1")
    assert result.returncode != 0
    assert "IAAS_OUTGOING_ALLOW_PRIVATE is for development only" in result.stderr
