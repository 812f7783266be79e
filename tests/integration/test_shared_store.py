"""The shared store through the broker: any value content, set semantics, survives a store restart."""

from __future__ import annotations

import pytest

from client.job import TitanJob
from titan_zmq.errors import InvalidRequest
from titan_zmq.protocol import Op
from titan_zmq.store.client import StoreClient

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


def test_journal_keys_are_read_only_for_clients(cluster, client):
    """Refused by the client library, by the broker's pass-through (even when the request claims to be
    the journal's) and by the store itself on a direct link; the journal stays readable."""
    run_id = client.submit_dag("ro", [TitanJob("a", command="true")]).run_id
    with pytest.raises(InvalidRequest, match="reserved"):
        client.store_put("run/x", "y")
    with pytest.raises(InvalidRequest, match="reserved"):
        client.conn.request(Op.KV_SET, {"key": f"run/{run_id}", "value": b"x", "journal": True})
    with pytest.raises(InvalidRequest, match="reserved"):
        client.conn.request(Op.KV_DEL, {"key": f"job/{run_id}/a"})
    with StoreClient(cluster.store_addr, timeout=5) as direct:
        for key in (f"run/{run_id}", f"spec/{run_id}/a", "blob/x"):
            with pytest.raises(InvalidRequest, match="reserved"):
                direct.set(key, b"x")
        with pytest.raises(InvalidRequest, match="reserved"):
            direct.batch([["del", f"job/{run_id}/a"]])
        assert direct.get(f"run/{run_id}") is not None
    assert client.wait(run_id, timeout=30)["state"] == "SUCCEEDED"
