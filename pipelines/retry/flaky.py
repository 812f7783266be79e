"""Fails until its third attempt (TITAN_ATTEMPT tells the script which attempt it is)."""

import os
import sys

attempt = int(os.environ["TITAN_ATTEMPT"])
print(f"flaky: attempt {attempt}")
if attempt < 3:
    print(f"flaky: failing on purpose (attempt {attempt})", file=sys.stderr)
    sys.exit(3)
print("flaky: succeeded")
