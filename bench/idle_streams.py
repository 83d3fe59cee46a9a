#!/usr/bin/env python3
"""Opens N streamed chat completions and holds them open (memory with idle streams).

Usage: idle_streams.py URL KEY N HOLD_SECS READY_FILE
Each connection sends one `"stream": true` request and reads until the response headers have
arrived (the stream is open: upstream asked, nothing more flowing while the stand-in waits out its
token delay). When all N are open (or failed), writes a JSON line {"open": k, "failed": f, "statuses": {...}}
to READY_FILE, holds the connections for HOLD_SECS (or until SIGTERM), then closes them all.
Standard library only; raise the open-files limit first (ulimit -n)."""

import asyncio
import json
import signal
import sys
from urllib.parse import urlsplit


async def open_one(host, port, path, key, body, statuses, writers, connecting):
    try:
        async with connecting:  # connect in waves, as clients arriving over a few seconds would
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                (
                    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 120)
        while (await asyncio.wait_for(reader.readline(), 120)) not in (b"\r\n", b""):
            pass
        status = status_line.split(b" ")[1].decode() if status_line else "closed"
        statuses[status] = statuses.get(status, 0) + 1
        writers.append(writer)
        return status == "200"
    except Exception as e:  # connection refused, reset, timeout: counted, never raised
        name = type(e).__name__
        statuses[name] = statuses.get(name, 0) + 1
        return False


async def main():
    url, key, n, hold, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    u = urlsplit(url)
    body = json.dumps(
        {"model": "taogate-owner", "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "idle stream"}]}
    ).encode()
    statuses, writers = {}, []
    connecting = asyncio.Semaphore(200)
    results = await asyncio.gather(
        *(open_one(u.hostname, u.port, u.path, key, body, statuses, writers, connecting) for _ in range(n))
    )
    opened = sum(results)
    with open(ready, "w") as f:
        f.write(json.dumps({"open": opened, "failed": n - opened, "statuses": statuses}) + "\n")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), hold)
    except asyncio.TimeoutError:
        pass
    for w in writers:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
