"""What the ASGI middlewares of `feast-bc serve` share: reading a request's body, answering in one
line, running blocking work off the event loop (:mod:`feast_bc.feature_server`, :mod:`feast_bc.push_server`)."""

from __future__ import annotations

import json


class BadRequest(ValueError):
    """A request the server answers with ``status`` and this one-line message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _reject_constant(name: str):
    raise BadRequest(f"the request body holds {name}, which JSON does not allow: send finite numbers or strings")


READ_EXAMPLE = '{"entities": {...}, ...}'


def parse_body(body: bytes, example: str = READ_EXAMPLE) -> dict:
    """The request's JSON object (``NaN``/``Infinity`` refused, as strict JSON does); ``example`` is
    the shape the errors name (a read's by default)."""
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not JSON ({exc}): send {example}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"the request body must be a JSON object: {example}")
    return payload


async def in_thread(function, *args):
    import anyio.to_thread

    return await anyio.to_thread.run_sync(function, *args)


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the disconnect, when it comes

    return replay


async def answer(send, status: int, content: dict) -> None:
    data = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
