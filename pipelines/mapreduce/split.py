"""Split a text into N chunks in the run's shared directory."""

import os
import sys
from pathlib import Path

n = int(sys.argv[1])
words = [f"w{i % 7}" for i in range(7000)]
shared = Path(os.environ["TITAN_SHARED_DIR"])
for i in range(n):
    (shared / f"chunk-{i}.txt").write_text(" ".join(words[i::n]))
print(f"split {len(words)} words into {n} chunks")
