"""A real HTTP receiver on loopback for the webhook tests: records every request and
answers as the test says (fail for a while, hold a request until released)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


def spec_verify(secret: str, received: Received) -> bool:
    """The Standard Webhooks check, written from the specification (not the signing
    library): HMAC-SHA256 with the base64-decoded secret over ``id.timestamp.body``, any
    of the space-separated ``v1,<base64>`` signatures matching."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1) for part in received.headers["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(signature, expected) for version, signature in offered)


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # answers for the first requests, then 204
    hold: threading.Event | None = None  # set: requests wait on it before answering
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                receiver.requests.append(received)
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                number = len(receiver.requests)
                status = receiver.statuses[number - 1] if number <= len(receiver.statuses) else 204
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/iaas"

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
