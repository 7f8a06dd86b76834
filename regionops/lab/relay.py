"""The WAN relay: every cross-region TCP connection of the lab, delayed as the regions' distance says.

The lab's nft rules (:mod:`regionops.lab.wan`) redirect each TCP connection from one
region's namespace to another region's address to this process on the host.  It reads
the connection's original destination (``SO_ORIGINAL_DST``), connects there after the
one-way delay, and forwards each chunk of bytes in either direction one one-way delay
after it arrived (plus jitter; order kept).  So:

- a new connection costs one round trip before the first byte arrives (SYN, SYN-ACK),
  and every request/answer one more, as across a real WAN;
- ``wan-degraded`` adds delay, and its loss adds a retransmission timeout to a chunk
  with the loss's probability (a TCP stream never loses bytes; it waits for them);
- while either end's region is partitioned, the relay holds the bytes (the nft rules
  drop the packets too): the connection stalls as on a real partition, and what the
  peer did not give up on flows again after the heal.

It re-reads the WAN state file (profile, partitions, degraded regions) whenever it changes.

``--forward LISTEN --to TARGET`` (repeatable, in pairs) runs a plain forwarder instead
(no delay): a region's S3 endpoint, in the region's namespace, in front of the AWS
backbone on the host; the control plane's services at the ops site's address.

    python -m regionops.lab.relay --lab-index 0 --port 15460 --state STATE
    python -m regionops.lab.relay --forward 10.150.1.2:15490 --to 10.150.0.1:15490
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import struct
import time
from pathlib import Path

from regionops.lab.wan import JITTER_FRACTION, WanPlan, WanState, parse_wan

log = logging.getLogger("regionops.relay")
SO_ORIGINAL_DST = 80
CHUNK = 64 * 1024
RETRANSMIT_MS = 200.0  # Linux's minimum RTO: what a lost segment costs the stream


class WanConditions:
    """The WAN as the state file says now; re-read when the file changes."""

    def __init__(self, plan: WanPlan, state_file: Path):
        self.plan = plan
        self.state_file = state_file
        self._mtime = -1.0
        self.state = WanState()
        self.profile = parse_wan("scaled:0")
        self.refresh()

    def refresh(self) -> None:
        try:
            mtime = os.stat(self.state_file).st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        self.state = WanState.load(self.state_file)
        self.profile = parse_wan(self.state.profile) if self.state.profile != "off" else parse_wan("scaled:0")
        st = self.state
        log.info("WAN now: %s, partitioned %s, degraded %s", st.profile, st.partitioned, st.degraded)

    def cut(self, a: str, b: str) -> bool:
        """True while a partition separates the two regions."""
        return a != b and bool({a, b} & set(self.state.partitioned))

    def delay_ms(self, a: str, b: str) -> float:
        """One chunk's one-way delay from ``a`` to ``b`` now: distance, jitter, degradation and loss."""
        base = self.profile.one_way_ms(a, b)
        delay = base * (1 + random.uniform(-JITTER_FRACTION, JITTER_FRACTION))  # noqa: S311 - not crypto
        for region in {a, b}:
            extra = self.state.degraded.get(region)
            if extra:
                delay += float(extra.get("extra_ms", 0))
                if random.random() < float(extra.get("loss", 0)):  # noqa: S311
                    delay += RETRANSMIT_MS + 2 * base
        return delay


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the client meant to connect before nft redirected it here."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, ip = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(ip), port


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    wan: WanConditions,
    src: str,
    dst: str,
    not_before: float,
) -> None:
    """Forward bytes from ``reader`` to ``writer``, each chunk one delay after it arrived, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        last = not_before
        while True:
            data = await reader.read(CHUNK)
            due = max(last, time.monotonic() + wan.delay_ms(src, dst) / 1000)
            last = due
            await queue.put((due, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while wan.cut(src, dst):
                await asyncio.sleep(0.05)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    receiving = asyncio.create_task(receive())
    try:
        await send()
    finally:
        receiving.cancel()


async def _relay(wan: WanConditions, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    sock = client_w.get_extra_info("socket")
    peer = client_w.get_extra_info("peername")[0]
    try:
        dst_ip, dst_port = original_destination(sock)
    except OSError:
        client_w.close()
        return
    src, dst = wan.plan.region_of(peer), wan.plan.region_of(dst_ip)
    if src is None or dst is None:
        log.warning("refused %s -> %s:%s: not between two of the lab's regions", peer, dst_ip, dst_port)
        client_w.close()
        return
    accepted = time.monotonic()
    one_way = wan.delay_ms(src, dst) / 1000
    await asyncio.sleep(one_way)  # the SYN crossing
    while wan.cut(src, dst):
        await asyncio.sleep(0.05)
    try:
        server_r, server_w = await asyncio.open_connection(dst_ip, dst_port)
    except OSError as exc:
        log.info("%s -> %s (%s:%s): %s", src, dst, dst_ip, dst_port, exc)
        client_w.close()
        return
    # The client's first bytes could leave only after the SYN-ACK came back: one more round trip.
    first_byte = accepted + 3 * one_way
    try:
        await asyncio.gather(
            _pump(client_r, server_w, wan, src, dst, first_byte),
            _pump(server_r, client_w, wan, dst, src, 0.0),
        )
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        for w in (server_w, client_w):
            w.close()


async def _forward(target: tuple[str, int], client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()
        return

    async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(CHUNK):
                w.write(data)
                await w.drain()
            w.write_eof()
        except OSError:
            pass

    try:
        await asyncio.gather(copy(client_r, server_w), copy(server_r, client_w))
    finally:
        for w in (server_w, client_w):
            w.close()


async def _watch(wan: WanConditions) -> None:
    while True:
        wan.refresh()
        await asyncio.sleep(0.1)


async def serve_relay(plan: WanPlan, port: int, state_file: Path) -> None:
    """Relay every redirected connection until killed."""
    wan = WanConditions(plan, state_file)
    server = await asyncio.start_server(lambda r, w: _relay(wan, r, w), "0.0.0.0", port, reuse_address=True)  # noqa: S104 - redirected connections arrive on every veth's address
    asyncio.create_task(_watch(wan))
    log.info("WAN relay of lab %s on port %s", plan.index, port)
    async with server:
        await server.serve_forever()


async def serve_forward(pairs: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    """Forward every connection on each listen address to its target until killed."""
    servers = []
    for listen, target in pairs:
        servers.append(await asyncio.start_server(functools.partial(_forward, target), *listen, reuse_address=True))
        log.info("forwarding %s:%s to %s:%s", *listen, *target)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab-index", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--forward", type=_address, action="append", help="listen address HOST:PORT (forwarder mode)")
    parser.add_argument("--to", type=_address, action="append", help="target HOST:PORT of the --forward before")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.forward:
        if len(args.forward) != len(args.to or []):
            parser.error("every --forward needs its --to")
        asyncio.run(serve_forward(list(zip(args.forward, args.to, strict=True))))
    else:
        asyncio.run(serve_relay(WanPlan(args.lab_index), args.port, args.state))


if __name__ == "__main__":
    main()
