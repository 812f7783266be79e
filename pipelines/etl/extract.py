"""Extract: produce raw records and put them in the store under this run's key."""

import json
import os

from client import TitanClient

run = os.environ["TITAN_RUN_ID"]
records = [{"city": c, "temp_c": t} for c, t in [("Oslo", 4.5), ("Lima", 19.0), ("Pune", 31.2), ("Kyiv", -2.0)]]
with TitanClient() as c:
    c.store_put(f"etl/{run}/raw", json.dumps(records))
print(f"extracted {len(records)} records")
