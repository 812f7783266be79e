"""The shared store through the broker: any value content, set semantics, survives a store restart."""

from __future__ import annotations

import pytest

from titan_zmq.errors import InvalidRequest

VALUES = {
    "unicode": "héllo wörld ✓ 漢字 🚀",
    "delims": "a|b|c,d,e|,|",
    "lines": "one\ntwo\r\nthree\n",
    "bytes": bytes(range(256)) * 3,
    "big": "x" * (1024 * 1024),
}


def test_values_round_trip_and_survive_a_store_restart(make_cluster):
    cluster = make_cluster(workers=0)
    with cluster.client(timeout=15) as c:
        for key, value in VALUES.items():
            c.store_put(f"v/{key}", value)
        assert c.store_sadd("s", "m|1") == 1
        assert c.store_sadd("s", "m|1") == 0
        assert c.store_sadd("s", "m,2") == 1
        assert c.store_incr("n", 5) == 5
        cluster.procs["store"].kill()  # kill -9: only the AOF survives
        cluster.start_store()
        for key, value in VALUES.items():
            assert c.store_get(f"v/{key}") == value, key
        assert sorted(c.store_smembers("s")) == ["m,2", "m|1"]
        assert c.store_incr("n") == 6
        assert c.store_srem("s", "m|1") == 1 and c.store_smembers("s") == ["m,2"]
        assert c.store_delete("v/big") and c.store_get("v/big") is None
        assert set(c.store_keys("v/")) == {f"v/{k}" for k in VALUES if k != "big"}


def test_journal_keys_are_read_only_for_clients(client):
    with pytest.raises(InvalidRequest, match="reserved"):
        client.store_put("run/x", "y")
