"""An HTTP proxy in front of moto that answers chosen AWS actions with AWS's bad days.

moto never throttles and never fails; AWS does, and so do the proxies and load balancers in
front of it. Through this proxy the real botocore retry logic and parsers meet real throttling
answers, and 5xx answers that are not AWS's XML, over HTTP. It can also make writers collide:
requests of a gathered action wait for each other and reach moto together, as two writers'
requests do when they race.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
import time
import urllib.parse
from collections import Counter

__all__ = ["ThrottlingProxy"]

# The awsQuery error shape (Auto Scaling, IAM); 400 + Throttling is how they throttle.
_THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
    b"<Message>Rate exceeded</Message></Error><RequestId>sgmesh-test</RequestId></ErrorResponse>"
)
# What a proxy in front of AWS answers in an outage (Envoy's words): a 503 whose body is not
# AWS's XML, which botocore cannot parse (ResponseParserError, which is no BotoCoreError).
_UNPARSEABLE = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class ThrottlingProxy:
    """Forwards to moto; throttles the next `throttle[action]` requests of each action, and
    answers the next `unparseable[action]` ones with a proxy's 503 page. `gather(action, n)`
    holds the next `n` requests of `action` until all `n` have come. `answers` counts what
    moto answered, by action and HTTP status."""

    def __init__(self, target_port: int) -> None:
        self.throttle: Counter[str] = Counter()
        self.unparseable: Counter[str] = Counter()
        # Seconds each request of an action is held before it goes on: a slow AWS.
        self.slow: dict[str, float] = {}
        self.requests: Counter[str] = Counter()
        # The form parameters of every request (awsQuery services: EC2, Auto Scaling, IAM).
        self.forms: list[dict[str, str]] = []
        self.throttled: Counter[str] = Counter()
        self.answers: Counter[tuple[str, int]] = Counter()
        self._gathering: dict[str, threading.Barrier] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
                action = form.get("Action", "")
                with proxy._lock:
                    proxy.requests[action] += 1
                    proxy.forms.append(form)
                    throttled = proxy.throttle[action] > 0
                    if throttled:
                        proxy.throttle[action] -= 1
                        proxy.throttled[action] += 1
                    broken = not throttled and proxy.unparseable[action] > 0
                    if broken:
                        proxy.unparseable[action] -= 1
                        proxy.throttled[action] += 1
                if throttled:
                    self._answer(400, _THROTTLED, {"Content-Type": "text/xml"})
                    return
                if broken:
                    self._answer(503, _UNPARSEABLE, {"Content-Type": "text/plain"})
                    return
                proxy._wait_for_the_others(action)
                time.sleep(proxy.slow.get(action, 0.0))
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request("POST", self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                passed = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
                with proxy._lock:
                    proxy.answers[(action, response.status)] += 1
                self._answer(response.status, payload, passed)

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def gather(self, action: str, requests: int) -> None:
        with self._lock:
            self._gathering[action] = threading.Barrier(requests)

    def _wait_for_the_others(self, action: str, deadline: float = 30) -> None:
        with self._lock:
            barrier = self._gathering.get(action)
        if barrier is None:
            return
        # Broken: the others never came; this one goes through alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(deadline)
        with self._lock:
            if self._gathering.get(action) is barrier:
                del self._gathering[action]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
