"""A reverse proxy on loopback in front of a real service, misbehaving on demand.

The three things a proxy between WorkOS and the forwarder is seen to do, one ``mode`` each:
``pass`` forwards everything byte for byte; ``drop_signature`` removes the
``WorkOS-Signature`` header (an allow-list of headers that does not know it);
``reserialize`` parses the JSON body and writes it again (a body-parsing middleware or WAF),
which changes the bytes while keeping the meaning. The upstream's answer comes back as is.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.doubles import LoopbackServer

Mode = Literal["pass", "drop_signature", "reserialize"]
_HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


class ReverseProxy(LoopbackServer):
    def __init__(self, upstream: str, mode: Mode = "pass") -> None:
        super().__init__(Starlette(routes=[Route("/{path:path}", self._forward, methods=["POST"])]))
        self.upstream = upstream.rstrip("/")
        self.mode: Mode = mode
        self.forwarded = 0

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {name: value for name, value in request.headers.items() if name not in _HOP_BY_HOP}
        if self.mode == "drop_signature":
            headers.pop("workos-signature", None)
        elif self.mode == "reserialize":
            body = json.dumps(json.loads(body)).encode()
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{self.upstream}{request.url.path}", content=body, headers=headers)
        self.forwarded += 1
        kept = {name: value for name, value in answer.headers.items() if name not in _HOP_BY_HOP}
        return Response(answer.content, answer.status_code, kept)
