"""Sum the mappers' counts; record that the collector ran (the tests count these runs)."""

import json
import os
import sys
from collections import Counter
from pathlib import Path

n = int(sys.argv[1])
shared = Path(os.environ["TITAN_SHARED_DIR"])
total: Counter[str] = Counter()
for i in range(n):
    total.update(json.loads((shared / f"counts-{i}.json").read_text()))
with open(shared / "reduce.runs", "a") as f:
    f.write(f"{os.environ['TITAN_ATTEMPT']}\n")
print(f"reduce: {sum(total.values())} words, {dict(sorted(total.items()))}")
