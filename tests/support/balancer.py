"""A round-robin TCP load balancer for tests: what sits in front of the ingress replicas.

Each accepted connection goes to the next backend in turn; a backend that refuses the
connection is skipped (the next one is tried at once, as a load balancer's passive health
check does), so a replica that died costs the clients only the connections it held. Bytes are
copied both ways until either side closes. No HTTP parsing: the clients open one connection
per request to be spread evenly.

Run as a process: `python -m tests.support.balancer PORT HOST:PORT [HOST:PORT ...]`; it prints
`balancer listening on 127.0.0.1:PORT` when ready and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._turn = itertools.cycle(range(len(backends)))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            host, port = self.backends[next(self._turn)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
            except (OSError, TimeoutError):
                continue  # down: the next backend takes this connection
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:  # every backend down: the client sees a closed connection
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        # A side that died (a SIGKILLed replica): reset the other side too, as a real
        # balancer does, so the client learns its request failed.
        transport = writer.transport
        transport.abort()
        return
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


async def serve(port: int, backends: list[tuple[str, int]]) -> None:
    balancer = Balancer(backends)
    server = await asyncio.start_server(balancer.handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"balancer listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m tests.support.balancer PORT HOST:PORT [HOST:PORT ...]",
              file=sys.stderr)
        return 2
    backends = [(b.rsplit(":", 1)[0], int(b.rsplit(":", 1)[1])) for b in argv[1:]]
    asyncio.run(serve(int(argv[0]), backends))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
