"""An SSE server outside Rust, for herdsman-client's interop test
(tests/tests/client.rs): sse-starlette on uvicorn.

GET /events streams three `tick` events (ids counting on from the
request's Last-Event-ID, `retry: 100`, CRLF line ends, sse-starlette's
default), then ends, so the client must reconnect and resume.

Prints the port it listens on (127.0.0.1, chosen by the OS), then serves
until killed.
"""

import asyncio
import socket

import uvicorn
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.routing import Route


async def events(request):
    last = request.headers.get("last-event-id", "")
    start = int(last) + 1 if last.isdigit() else 1

    async def ticks():
        for n in range(start, start + 3):
            yield ServerSentEvent(data=f'{{"n": {n}}}', id=str(n), event="tick", retry=100)
            await asyncio.sleep(0.01)

    return EventSourceResponse(ticks(), ping=15)


app = Starlette(routes=[Route("/events", events)])

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
