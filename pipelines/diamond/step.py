"""One step of the diamond: leaves a marker in the run's shared directory; checks the ones it needs."""

import os
import sys
import time
from pathlib import Path

name = sys.argv[1]
needs = sys.argv[sys.argv.index("--needs") + 1:] if "--needs" in sys.argv else []
shared = Path(os.environ["TITAN_SHARED_DIR"])
missing = [n for n in needs if not (shared / f"{n}.done").exists()]
if missing:
    print(f"{name}: parents not done: {missing}", file=sys.stderr)
    sys.exit(1)
print(f"{name}: running (attempt {os.environ['TITAN_ATTEMPT']}) on {os.environ.get('TITAN_WORKER')}")
time.sleep(0.2)
(shared / f"{name}.done").write_text(str(time.time()))
print(f"{name}: done")
