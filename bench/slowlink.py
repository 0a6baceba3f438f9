"""A slow "cloud" on loopback: a TCP proxy that gives every connection its own latency and bandwidth.

Put between rclone and ``rclone serve webdav``, it makes each HTTP connection behave like
a stream to a distant server: what the client sends waits ``latency`` seconds before it
goes on (one round trip per request), and what comes back is paced at ``rate`` bytes
per second *per connection* (cloud storage caps streams, not the line, so two downloads
of two files should take as long as one).  Runs in a thread of the benchmark process.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

CHUNK = 16 * 1024


class SlowLink:
    """``with SlowLink(target_port, latency, rate) as link:`` clients connect to ``link.port``."""

    def __init__(self, target_port: int, latency: float, rate: float) -> None:
        self.target_port, self.latency, self.rate = target_port, latency, rate
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> SlowLink:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow link did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, delay=self.latency),
                             self._pipe(up_reader, writer, rate=self.rate), return_exceptions=True)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float = 0.0,
                    rate: float = 0.0) -> None:
        start, sent = time.monotonic(), 0
        try:
            while data := await source.read(CHUNK):
                if delay:
                    await asyncio.sleep(delay)
                if rate:
                    sent += len(data)
                    ahead = start + sent / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    elif ahead < -1:  # idle connection (keep-alive): no burst credit
                        start, sent = time.monotonic(), len(data)
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()
