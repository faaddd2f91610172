"""A webhook receiver for the callback tests: a real HTTP server in a thread of the test."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.system import free_port, wait_until


class Receiver:
    """An HTTP server on 127.0.0.1 that records every delivery; by path: `ok`, `flaky` (500 to
    the first two deliveries to a URL), `fail` (500 always), `hang` (no answer until released),
    `trickle` (a 204 sent a byte every 0.5 s, ~45 s in all)."""

    def __init__(self) -> None:
        self.deliveries: list[dict] = []
        self.released = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.deliveries.append({"path": self.path, "headers": dict(self.headers), "body": body, "at": time.time()})
                    seen = sum(d["path"] == self.path for d in receiver.deliveries)
                if "/hang/" in self.path:
                    receiver.released.wait(60)
                if "/trickle/" in self.path:  # an answer a byte at a time: each read is quick, the whole is not
                    self.trickle(b"HTTP/1.1 204 No Content\r\nX-Slow: " + b"." * 60 + b"\r\n\r\n")
                    return
                code = 500 if "/fail/" in self.path or ("/flaky/" in self.path and seen <= 2) else 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def trickle(self, answer: bytes) -> None:
                try:
                    for byte in answer:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if receiver.released.wait(0.5):
                            break
                except OSError:  # the client gave up
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{kind}/{uuid.uuid4().hex}"

    def at(self, url: str) -> list[dict]:
        path = url.split(str(self.server.server_address[1]), 1)[1]
        with self.lock:
            return [d for d in self.deliveries if d["path"] == path]

    def wait_for(self, url: str, count: int = 1, timeout: float = 60) -> list[dict]:
        return wait_until(lambda: self.at(url) if len(self.at(url)) >= count else None, timeout, interval=0.1,
                          what=f"{count} deliveries to {url}")

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
