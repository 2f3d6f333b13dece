"""The floor: the cheapest ASGI app on the same server the forwarder runs on.

It reads the whole body and answers 200 with a small JSON body, nothing else: no
verification, no journal. Its requests/s on one core is what uvicorn + uvloop + httptools
allow, the ceiling the forwarder's acknowledged rate is compared with.

``python -m bench.floor PORT``. It takes its server options from
``forwarder.server.server_config``: the comparison is only fair on the same stack.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from forwarder.server import server_config

Message = MutableMapping[str, Any]
_BODY = b'{"status":"accepted"}'
# A declared length spares the server chunked encoding: the floor is the cheapest answer.
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    config = server_config(app, "127.0.0.1", int(sys.argv[1]), lifespan="off", shutdown_timeout_s=1)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
