"""Load: read the transformed records and report the result."""

import json
import os

from client import TitanClient

run = os.environ["TITAN_RUN_ID"]
with TitanClient() as c:
    rows = json.loads(c.store_get(f"etl/{run}/clean"))
    c.store_incr("etl/loads")
warmest = max(rows, key=lambda r: r["temp_f"])
print(f"loaded {len(rows)} rows; warmest: {warmest['city']} at {warmest['temp_f']} F")
