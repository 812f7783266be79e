"""Every tunable constant, with a one-line note. CLI flags and TITAN_* env vars override them."""

from __future__ import annotations

HOST = "127.0.0.1"  # loopback by default; other interfaces need an explicit flag
BROKER_PORT = 9090  # broker ROUTER (clients and workers)
PUB_PORT = 9091  # broker PUB (logs, events, heartbeat ticks)
STORE_PORT = 9092  # store REP
UI_PORT = 9093  # UI HTTP (base port + 3 under `titan up`) once the UI issue lands

DATA_DIR = ".titan-data"  # broker logs and store AOF, unless --data-dir says otherwise
WORKSPACE = ".titan-work"  # a worker's attempt workspaces, run directories and archives

BROKER_ADDR = f"tcp://{HOST}:{BROKER_PORT}"
PUB_ADDR = f"tcp://{HOST}:{PUB_PORT}"
STORE_ADDR = f"tcp://{HOST}:{STORE_PORT}"

MAX_BODY_BYTES = 64 * 1024 * 1024  # frames with a larger body are refused with an ERROR reply

PUB_HWM = 2000  # events queued per slow subscriber before they are dropped (followers fill gaps by GET_LOGS)
SUB_HWM = 2000  # events a slow reader (logs -f, wait) buffers before it loses live lines and refills by GET_LOGS
WORKER_SNDHWM = 200  # frames queued towards the broker before the worker holds job output back

HEARTBEAT_INTERVAL = 1.0  # seconds between heartbeats when a link is otherwise idle
HEARTBEAT_LIVENESS = 3  # missed intervals before a peer counts as dead
RECONNECT_MIN = 1.0  # worker reconnect backoff starts here...
RECONNECT_MAX = 32.0  # ...and doubles up to here

SLOTS = 4  # concurrent jobs per worker
CAPABILITY = "GENERAL"  # the capability every job asks for unless told otherwise
RETRIES = 3  # retries after the first attempt (4 attempts in all)
RETRY_BACKOFF = 1.0  # seconds before the first retry; doubles each attempt
RETRY_BACKOFF_MAX = 60.0  # cap on the retry backoff
BLOB_CACHE = 8  # project archives the broker keeps in memory for dispatch
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when killing a job's process group

REQUEST_TIMEOUT = 10.0  # client request timeout, seconds
STORE_TIMEOUT = 2.0  # broker->store request timeout (shorter than the client timeout, so clients hear why)
STORE_RETRY_INTERVAL = 1.0  # seconds between broker pings while the store is unavailable
STORE_PROBE_TIMEOUT = 0.3  # a ping that takes longer means the store is still unavailable
RESTORE_GRACE = 8.0  # after a restart, seconds a RUNNING job waits for its worker to report it

LOG_BATCH_LINES = 500  # a worker sends at most this many lines per LOG_BATCH...
LOG_BATCH_BYTES = 64 * 1024  # ...or this many bytes
LOG_FLUSH_INTERVAL = 0.02  # seconds a partial batch may wait before it is sent
LOG_MAX_LINE = 16 * 1024  # longer lines are split
LOG_PAGE_LINES = 20_000  # GET_LOGS returns at most this many lines per page

FSYNC = "always"  # store AOF fsync policy: always | everysec | no
COMPACT_MIN_BYTES = 64 * 1024 * 1024  # auto-compact the AOF once it is this large...
COMPACT_RATIO = 4.0  # ...and this many times the size of the live data

# Worker hardening: nothing that grows with user data runs on the worker's loop, and what it does is capped.
WORKER_THREADS = 2  # threads that prepare attempts (archives, scripts) off the worker's loop
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # a project archive larger than this is refused
MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024  # a project that unpacks to more than this is refused...
MAX_UNPACK_RATIO = 200  # ...or to more than this many times its archive's size (a zip bomb); 0 = no check
UNPACK_RATIO_FREE_BYTES = 64 * 1024 * 1024  # projects that unpack to no more than this skip the ratio check
KEEP_FAILED_HOURS = 24.0  # workspaces of failed attempts are kept this long for a look (0 = removed at once)
SWEEP_INTERVAL = 300.0  # seconds between a worker's sweeps of expired failed workspaces

MAX_LOG_BYTES = 256 * 1024 * 1024  # per job on the broker's disk; later lines are dropped with a marker
