"""The one fence around botocore internals that `sgmesh.aws.shared_reads` relies on, and
`missing()`, which says when the installed botocore no longer has them.

- The request dict of the `before-call` event (`params`): `url`, `url_path`, `query_string`,
  `method` and `body` make the key of a shared read.
- `before-call` handlers may answer in botocore's place by returning `(http_response, parsed)`.
- `botocore.awsrequest.AWSResponse(url, status_code, headers, raw)` stands for a served answer.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import botocore.awsrequest
import botocore.session

__all__ = ["REQUEST_FIELDS", "missing", "request_fields", "response_without_body"]

REQUEST_FIELDS = ("url", "url_path", "query_string", "method", "body")
_RESPONSE_PARAMETERS = ("url", "status_code", "headers", "raw")


class _NoBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        return iter(())


def response_without_body(http_response: Any) -> botocore.awsrequest.AWSResponse:
    """The HTTP response without its body: botocore reads only the status of a served answer
    (the parsed answer is kept apart), and a body of rules with their tags is large."""
    return botocore.awsrequest.AWSResponse(
        http_response.url, http_response.status_code, http_response.headers, _NoBody()
    )


def request_fields(params: Mapping[str, Any]) -> list[Any]:
    """The parts of a `before-call` request dict that say what is asked, in a fixed order."""
    return [params.get(name) for name in REQUEST_FIELDS]


def missing() -> list[str]:
    """What the installed botocore lacks of what this module relies on; empty when all is there.

    It sends nothing: a `before-call` handler answers the one call it makes, which also proves
    that botocore still takes such an answer in its place."""
    lacking: list[str] = []
    parameters = inspect.signature(botocore.awsrequest.AWSResponse).parameters
    lacking.extend(
        f"botocore.awsrequest.AWSResponse({name})"
        for name in _RESPONSE_PARAMETERS
        if name not in parameters
    )
    seen: dict[str, Any] = {}

    def answer(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        seen.update(params)
        headers: Any = {}
        response = botocore.awsrequest.AWSResponse("https://ec2", 200, headers, _NoBody())
        return response, {"SecurityGroups": []}

    session = botocore.session.get_session()
    client: Any = session.create_client(
        "ec2",
        region_name="us-east-1",
        aws_access_key_id="compat",
        aws_secret_access_key="compat",  # nothing is sent
    )
    events: Any = client.meta.events
    events.register_first("before-call.*.*", answer)
    try:
        parsed = client.describe_security_groups()
    except Exception as error:  # any failure: the hook no longer answers
        return [*lacking, f"before-call answers ({type(error).__name__}: {error})"]
    if "SecurityGroups" not in parsed:
        lacking.append("before-call answers (botocore asked AWS instead)")
    lacking.extend(f"before-call params[{name!r}]" for name in REQUEST_FIELDS if name not in seen)
    return lacking
