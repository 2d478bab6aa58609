"""An HTTP proxy on 127.0.0.1 in front of the moto S3 server that injects faults: 503 SlowDown,
500 InternalError and dropped connections, each at its own rate, from a seeded RNG."""

from __future__ import annotations

import http.client
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERR = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{msg}</Message></Error>"


class FaultProxy:
    def __init__(self, upstream: str, seed: int = 0, lose_reply=None, fail=None, **rates):
        """``lose_reply(method, path, headers) -> bool``: requests forwarded to the store whose reply is then
        dropped (the store did the work, the client sees a reset and retries), each matching one once.
        ``fail(method, path) -> bool``: requests answered 503 SlowDown every time (a call that never
        passes)."""
        self.up = urlparse(upstream)
        self.lose_reply, self.lost, self.fail = lose_reply, [], fail
        self.rates = {"slowdown": 0.0, "internal": 0.0, "drop": 0.0, **rates}
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.counts = {"requests": 0, "slowdown": 0, "internal": 0, "drop": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fault = "slowdown" if proxy.fail and proxy.fail(self.command, self.path) else proxy._draw()
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault:
                    code, status = ("SlowDown", 503) if fault == "slowdown" else ("InternalError", 500)
                    data = ERR.format(code=code, msg="injected").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD reply has no body: one would poison the connection
                        self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.up.hostname, proxy.up.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if proxy._lose(self.command, self.path, self.headers):  # done upstream, the reply lost
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    return
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = r.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hung up on an injected fault: not a traceback on the test's stderr

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _draw(self):
        with self.lock:
            self.counts["requests"] += 1
            u, acc = self.rng.random(), 0.0
            for name, rate in self.rates.items():
                acc += rate
                if u < acc:
                    self.counts[name] += 1
                    return name
        return None

    def _lose(self, method, path, headers) -> bool:
        with self.lock:
            if (
                self.lose_reply is None
                or (method, path) in self.lost
                or not self.lose_reply(method, path, headers)
            ):
                return False
            self.lost.append((method, path))
            return True

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
