"""Project-mode entry point: imports a module shipped alongside it and echoes its argv."""

import json
import sys

from lib.util import shout

print("argv:", json.dumps(sys.argv[1:]))
print(shout("project mode works"))
