"""Sessions that come and go leave nothing behind: 50 connect/disconnect cycles of an
independent client keep the gateway's resident memory within 5 MB."""

from __future__ import annotations

import gc
from pathlib import Path

import psutil

from tests.opcua.conftest import OPERATOR, ClientCertificate

CYCLES = 50
WARM_UP = 5  # first sessions fill caches (asyncua's, the allocator's) that then stay
LIMIT_BYTES = 5 * 2**20


async def test_connect_disconnect_cycles_keep_memory_flat(
    opcua_gateway, node_client, tmp_path: Path
) -> None:
    gateway = await opcua_gateway()
    certificate = ClientCertificate(tmp_path / "client")
    certificate.trust(Path(gateway.config.opcua.pki_dir))
    client = await node_client()
    cycle = {
        "url": gateway.opcua.url,
        "user": OPERATOR[0],
        "password": OPERATOR[1],
        **certificate.options(),
    }
    me = psutil.Process()

    async def one_session() -> None:
        answer = await client.request("connect", **cycle)
        assert answer["ok"], answer
        read = await client.request("read", nodeIds=["ns=2;s=machine_1.Position"])
        assert read["values"][0]["status"] == "Good"
        closed = await client.request("disconnect")
        assert closed["ok"], closed

    for _ in range(WARM_UP):
        await one_session()
    gc.collect()
    before = me.memory_info().rss
    for _ in range(CYCLES):
        await one_session()
    gc.collect()
    after = me.memory_info().rss
    print(f"RSS {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB after {CYCLES} sessions")
    assert after - before <= LIMIT_BYTES
