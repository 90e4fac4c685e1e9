#!/usr/bin/env python3
"""Memory per idle keep-alive client connection, for benches/run.sh.

Opens COUNT TCP connections to HOST:PORT, sends one RemoveUsers request on each (so each is a
served keep-alive connection, not just an accepted socket), reads the answer, and holds them all
open. Reports the server processes' resident memory (VmRSS, from /proc) before, while held, and
after they are closed, as one JSON object on standard output.

    idle_conns.py --port 8080 --count 5000 --pids 1234[,1235] [--hold 3]
"""

import argparse
import asyncio
import json
import resource
import sys
import time

PATH = "/v2/apps/app-123/rooms/room-456/batch-remove-users"
BODY = b'{"user_ids":["user001","user002"]}'


def rss_kb(pids, field="VmRSS"):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status


async def open_one(host, port, sem):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        request = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        writer.write(request)
        await writer.drain()
        status = await asyncio.wait_for(read_response(reader), 10)
        return reader, writer, status


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--pids", required=True, help="comma-separated server process ids to measure")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds to hold the connections")
    ap.add_argument("--parallel", type=int, default=16, help="connections being opened at once")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 1000
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    before = rss_kb(pids)
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(open_one(args.host, args.port, sem) for _ in range(args.count)), return_exceptions=True
    )
    opened = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    statuses = {}
    for _, _, status in opened:
        statuses[status] = statuses.get(status, 0) + 1
    open_s = time.monotonic() - t0

    await asyncio.sleep(args.hold)
    # Still open? A server that closed idle connections would show EOF here.
    alive = sum(1 for reader, _, _ in opened if not reader.at_eof())
    held = rss_kb(pids)
    hwm = rss_kb(pids, "VmHWM")

    for _, writer, _ in opened:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w, _ in opened), return_exceptions=True)
    await asyncio.sleep(1.0)
    after = rss_kb(pids)

    out = {
        "count": args.count,
        "opened": len(opened),
        "alive_after_hold": alive,
        "failed": len(failed),
        "first_error": repr(failed[0]) if failed else None,
        "statuses": statuses,
        "open_seconds": round(open_s, 2),
        "rss_before_kb": before,
        "rss_held_kb": held,
        "rss_after_close_kb": after,
        "hwm_kb": hwm,
        "kb_per_conn": round((held - before) / max(1, len(opened)), 2),
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
