"""An HTTP proxy in front of moto that answers chosen AWS actions with AWS's bad days.

moto never throttles and never fails; AWS does, and so do the proxies and load balancers in
front of it. Through this proxy the real botocore retry logic and parsers meet real throttling
answers, and 5xx answers that are not AWS's XML, over HTTP. It can also make writers collide:
requests of a gathered action wait for each other and reach moto together, as two writers'
requests do when they race. And it can refuse an action with any AWS error, in the error shape
of the service asked (EC2's, the other query services', or the JSON services'), so that an
error moto cannot be made to say still reaches the client over HTTP, through its parser and
retry logic.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import random
import re
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
# The service a request is signed for: `Credential=<key>/<date>/<region>/<service>/aws4_request`.
_SIGNED_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


def _error_answer(service: str, code: str) -> tuple[bytes, str]:
    """An AWS error as `service` words it: the body and its content type."""
    message = f"{code} (answered by the test's fault proxy)"
    if service == "ec2":
        return (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            "</Errors><RequestID>sgmesh-test</RequestID></Response>"
        ).encode(), "text/xml"
    if service in ("iam", "autoscaling", "sts"):
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><ErrorResponse><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>sgmesh-test</RequestId></ErrorResponse>"
        ).encode(), "text/xml"
    return json.dumps({"__type": code, "message": message}).encode(), "application/x-amz-json-1.1"


class ThrottlingProxy:
    """Forwards to moto; throttles the next `throttle[action]` requests of each action, and
    answers the next `unparseable[action]` ones with a proxy's 503 page. `gather(action, n)`
    holds the next `n` requests of `action` until all `n` have come. `refuse[action] = (code,
    status)` answers every request of `action` with that AWS error until it is removed.
    `answers` counts what moto answered, by action and HTTP status. An action is the query
    protocol's `Action`, or the operation an `X-Amz-Target` names (JSON services)."""

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
        self.refuse: dict[str, tuple[str, int]] = {}
        self.refused: Counter[str] = Counter()
        # `refuse_share[service] = (code, status, share)` answers that share of the service's
        # requests (the service they are signed for: "ec2", "iam", ...), drawn at random, with
        # that AWS error until it is removed: AWS throttling an account that asks too much.
        self.refuse_share: dict[str, tuple[str, int, float]] = {}
        self._draw = random.Random(22)
        self._gathering: dict[str, threading.Barrier] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
                target = self.headers.get("X-Amz-Target", "")
                action = form.get("Action") or target.rpartition(".")[2]
                signed = _SIGNED_SERVICE.search(self.headers.get("Authorization", ""))
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
                    refusal = None if throttled or broken else proxy.refuse.get(action)
                    shared = proxy.refuse_share.get(signed[1]) if signed else None
                    drawn = shared is not None and proxy._draw.random() < shared[2]
                    if not (throttled or broken or refusal) and shared and drawn:
                        refusal = shared[:2]
                    if refusal:
                        proxy.refused[action] += 1
                if throttled:
                    self._answer(400, _THROTTLED, {"Content-Type": "text/xml"})
                    return
                if broken:
                    self._answer(503, _UNPARSEABLE, {"Content-Type": "text/plain"})
                    return
                if refusal:
                    code, status = refusal
                    payload, content_type = _error_answer(signed[1] if signed else "", code)
                    self._answer(status, payload, {"Content-Type": content_type})
                    return
                proxy._wait_for_the_others(action)
                time.sleep(proxy.slow.get(action, 0.0))
                self._forward(action, body)

            def do_GET(self) -> None:
                # REST services (EKS: DescribeCluster, ListPodIdentityAssociations) pass through,
                # counted by method and path; faults are injected into query-protocol actions.
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                action = f"{self.command} {urllib.parse.urlsplit(self.path).path}"
                with proxy._lock:
                    proxy.requests[action] += 1
                self._forward(action, body)

            def _forward(self, action: str, body: bytes) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, self.path, body=body, headers=headers)
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
