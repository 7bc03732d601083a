"""An HTTP proxy in front of moto whose EC2 reads show security-group rules' tags as they were
`lag_seconds` ago: AWS's eventual consistency, which moto (always consistent) never shows.

EC2 documents that the effects of its writes reach its reads after a delay ("eventual
consistency"); a rule's tags written by one caller may be missing, or still present, in the
answers another caller — or the same one — gets for a few seconds. The proxy plays one
consistent replica that runs `lag_seconds` behind: an answer to `DescribeSecurityGroupRules`
shows every rule's tags as they stood at `now - lag_seconds`, so a read that shows a write
also shows every write made before it.

How: each `CreateTags`/`DeleteTags` on `sgr-` resources passes through one at a time; the
proxy reads the rules' tags from moto before and after it, and keeps their history. Answers
are rewritten only for rules with a history; everything else passes as moto answered it.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree import ElementTree

__all__ = ["LaggingTagsProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_TAG_WRITES = ("CreateTags", "DeleteTags")

Tags = dict[str, str]


@dataclass
class _History:
    """A rule's tags before the first write the proxy saw, then after each write."""

    before: Tags
    writes: list[tuple[float, Tags]] = field(default_factory=list)

    def at(self, moment: float) -> Tags:
        seen = self.before
        for written_at, tags in self.writes:
            if written_at > moment:
                break
            seen = tags
        return seen


class LaggingTagsProxy:
    def __init__(
        self, target_port: int, lag_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lag_seconds = lag_seconds
        self._clock = clock
        self._history: dict[str, _History] = {}
        self._lock = threading.Lock()
        # One tag write at a time, so that "before" and "after" are its own.
        self._writing = threading.Lock()
        # Answers rewritten to show older tags than moto holds (the test asserts the lag bit).
        self.stale_answers = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
                action = form.get("Action", "")
                rules = [
                    value
                    for key, value in form.items()
                    if key.startswith("ResourceId.") and value.startswith("sgr-")
                ]
                if action in _TAG_WRITES and rules:
                    with proxy._writing:
                        before = proxy._read_tags(self.headers, rules)
                        status, headers, payload = self._forward(body)
                        after = proxy._read_tags(self.headers, rules)
                        proxy._record(before, after)
                elif action == "DescribeSecurityGroupRules":
                    status, headers, payload = self._forward(body)
                    if status == 200:
                        payload = proxy._lagged(payload)
                else:
                    status, headers, payload = self._forward(body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                status, headers, payload = self._forward(b"")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                return proxy._send(self.command, self.path, body, headers)

            def log_message(self, *_: object) -> None:
                return

        self._target_port = target_port
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _send(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        upstream = http.client.HTTPConnection("127.0.0.1", self._target_port, timeout=60)
        upstream.request(method, path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        passed = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
        return response.status, passed, payload

    def _read_tags(self, signed: object, rule_ids: list[str]) -> dict[str, Tags]:
        """The rules' tags as moto holds them now (moto does not check signatures)."""
        form = {"Action": "DescribeSecurityGroupRules", "Version": "2016-11-15"}
        for index, rule_id in enumerate(rule_ids, start=1):
            form[f"SecurityGroupRuleId.{index}"] = rule_id
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            # moto routes by the signed service and region; any credentials will do.
            "Authorization": str(getattr(signed, "get", lambda *_: "")("Authorization", "")),
        }
        status, _, payload = self._send("POST", "/", urllib.parse.urlencode(form).encode(), headers)
        if status != 200:
            return {}
        return dict(_rules_tags(payload))

    def _record(self, before: dict[str, Tags], after: dict[str, Tags]) -> None:
        now = self._clock()
        with self._lock:
            for rule_id, tags in after.items():
                history = self._history.setdefault(rule_id, _History(before.get(rule_id, {})))
                history.writes.append((now, tags))

    def _lagged(self, payload: bytes) -> bytes:
        moment = self._clock() - self.lag_seconds
        root = ElementTree.fromstring(payload)
        ns = _namespace(root)
        ElementTree.register_namespace("", ns.strip("{}"))
        changed = False
        for item in _rule_items(root):
            rule_id = item.findtext(f"{ns}securityGroupRuleId")
            with self._lock:
                history = self._history.get(rule_id or "")
                shown = history.at(moment) if history else None
            if shown is None:
                continue
            tag_set = item.find(f"{ns}tagSet")
            if tag_set is None:
                tag_set = ElementTree.SubElement(item, f"{ns}tagSet")
            if _tags_of(tag_set, ns) == shown:
                continue
            for old in list(tag_set):
                tag_set.remove(old)
            for key, value in sorted(shown.items()):
                entry = ElementTree.SubElement(tag_set, f"{ns}item")
                ElementTree.SubElement(entry, f"{ns}key").text = key
                ElementTree.SubElement(entry, f"{ns}value").text = value
            changed = True
        if not changed:
            return payload
        with self._lock:
            self.stale_answers += 1
        rewritten: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
        return rewritten


def _namespace(root: ElementTree.Element) -> str:
    """The answer's XML namespace as ElementTree spells it in tags (`{...}`), or none."""
    return root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def _rule_items(root: ElementTree.Element) -> list[ElementTree.Element]:
    ns = _namespace(root)
    return [
        item
        for rules in root.iter(f"{ns}securityGroupRuleSet")
        for item in rules.findall(f"{ns}item")
    ]


def _tags_of(tag_set: ElementTree.Element, ns: str) -> Tags:
    return {
        entry.findtext(f"{ns}key") or "": entry.findtext(f"{ns}value") or ""
        for entry in tag_set.findall(f"{ns}item")
    }


def _rules_tags(payload: bytes) -> list[tuple[str, Tags]]:
    root = ElementTree.fromstring(payload)
    ns = _namespace(root)
    found: list[tuple[str, Tags]] = []
    for item in _rule_items(root):
        rule_id = item.findtext(f"{ns}securityGroupRuleId") or ""
        tag_set = item.find(f"{ns}tagSet")
        found.append((rule_id, {} if tag_set is None else _tags_of(tag_set, ns)))
    return found
