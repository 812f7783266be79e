"""Transform: read the raw records from the store, convert them, store the result."""

import json
import os

from client import TitanClient

run = os.environ["TITAN_RUN_ID"]
with TitanClient() as c:
    raw = json.loads(c.store_get(f"etl/{run}/raw"))
    out = [{**r, "temp_f": round(r["temp_c"] * 9 / 5 + 32, 1)} for r in raw]
    c.store_put(f"etl/{run}/clean", json.dumps(out))
for r in out:
    print(f"{r['city']}: {r['temp_c']} C -> {r['temp_f']} F")
