"""A minimal keep-alive HTTP/1.1 client on asyncio, as cheap as possible so the figures are the server's."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.header_end = -1
        self.need = -1
        self.status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"server closed the connection: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            start = head.find(b"content-length:")
            if start < 0:
                raise ConnectionError("response without Content-Length")
            stop = head.find(b"\r\n", start)
            length = int(head[start + 15 : stop if stop > 0 else None])
            self.header_end = end + 4
            self.need = self.header_end + length
        if len(self.buffer) >= self.need:
            body = bytes(self.buffer[self.header_end : self.need])
            del self.buffer[: self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((self.status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def raw_post(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def connect(host: str, port: int) -> Connection:
    _, conn = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return conn


def check(status: int, body: bytes, count: int) -> None:
    """A prediction answer: status 200 and one prediction per instance sent."""
    if status != 200:
        raise RuntimeError(f"server answered {status}: {body[:300]!r}")
    if body.count(b'"fare_amount"') != count:
        raise RuntimeError(f"expected {count} predictions, got {body[:300]!r}")


async def _client_loop(conn: Connection, raw: bytes, count: int, requests: int, deadline: float, latencies: list):
    clock = time.perf_counter
    for _ in range(requests):
        if clock() > deadline:
            break
        start = clock()
        status, body = await conn.request(raw)
        latencies.append(clock() - start)
        check(status, body, count)


async def scenario(host, port, path, body: bytes, count: int, clients: int, requests: int, warmup: int, limit_s: float):
    """`clients` keep-alive connections each POST `body` (`count` instances) `requests` times after
    `warmup` times, each loop bounded by `limit_s`; latency percentiles and throughput."""
    raw = raw_post(host, port, path, body)
    conns = [await connect(host, port) for _ in range(clients)]
    try:
        warm: list[float] = []
        await asyncio.gather(*(_client_loop(c, raw, count, warmup, time.perf_counter() + limit_s, warm) for c in conns))
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = started + limit_s
        await asyncio.gather(*(_client_loop(c, raw, count, requests, deadline, latencies) for c in conns))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            c.transport.close()
    return _summary(latencies, elapsed, count)


def _summary(latencies: list[float], elapsed: float, count: int) -> dict[str, Any]:
    ms = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "instances_per_request": count,
        "seconds": round(elapsed, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "instances_per_s": round(len(latencies) * count / elapsed, 1),
    }
