"""Count the words of one chunk; write the counts next to it."""

import json
import os
import sys
from collections import Counter
from pathlib import Path

i = int(sys.argv[1])
shared = Path(os.environ["TITAN_SHARED_DIR"])
counts = Counter((shared / f"chunk-{i}.txt").read_text().split())
(shared / f"counts-{i}.json").write_text(json.dumps(counts))
print(f"map {i}: {sum(counts.values())} words")
