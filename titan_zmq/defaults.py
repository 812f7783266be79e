"""Every tunable constant, with a one-line note. CLI flags and TITAN_* env vars override them."""

from __future__ import annotations

HOST = "127.0.0.1"  # loopback by default; other interfaces need an explicit flag
BROKER_PORT = 9090  # broker ROUTER (clients and workers)
PUB_PORT = 9091  # broker PUB (logs, events, heartbeat ticks)
STORE_PORT = 9092  # store REP
UI_PORT = 9093  # UI HTTP (base port + 3 under `titan up`) once the UI issue lands
MCP_BIND = f"{HOST}:8765"  # `titan mcp --transport http` listens here (stdio, the default, binds nothing)
MCP_LOG_LINES = 200  # lines the MCP tool job_logs returns unless asked for another number
MCP_MAX_LOG_LINES = 5000  # the most lines one job_logs call returns (an agent's context is not a log store)

DATA_DIR = ".titan-data"  # broker logs and store AOF, unless --data-dir says otherwise
WORKSPACE = ".titan-work"  # a worker's attempt workspaces, run directories and archives

BROKER_ADDR = f"tcp://{HOST}:{BROKER_PORT}"
PUB_ADDR = f"tcp://{HOST}:{PUB_PORT}"
STORE_ADDR = f"tcp://{HOST}:{STORE_PORT}"

MAX_BODY_BYTES = 64 * 1024 * 1024  # frames with a larger body are refused with an ERROR reply
MAX_ASSET_BYTES = 256 * 1024 * 1024  # largest asset or artifact the broker accepts (the store keeps it in memory)
ASSET_CHUNK_BYTES = 4 * 1024 * 1024  # uploads and downloads move assets in pieces of this size
UPLOAD_IDLE = 300.0  # seconds an unfinished upload may stay silent before its pieces are deleted
UPLOADS_MAX = 32  # unfinished uploads at once (the oldest idle one is given up for a new one)

# Submission caps: the client checks them before sending and the broker again (jobspec.py); README lists them.
MAX_JOBS_PER_SUBMISSION = 20_000  # jobs in one SUBMIT_DAG or ADD_JOBS (the broker takes ~1 s for this many)
MAX_JOBS_PER_RUN = 100_000  # jobs in one run, counting those added while it runs
MAX_NAME_CHARS = 256  # run name, agent_run_id, requirement (capability tag)
MAX_PATH_CHARS = 1024  # a job's file (a path in project mode)
MAX_TEXT_CHARS = 4096  # hitl_message
MAX_ARG_BYTES = 64 * 1024  # one command word, argument or env entry (NAME=value) in UTF-8 (Linux: 128 KiB)
MAX_EXEC_BYTES = 512 * 1024  # command, args and env of one job together (Linux: ~2 MiB with the worker's env)
MAX_PRIORITY = 2**31 - 1  # priority goes from -MAX_PRIORITY to MAX_PRIORITY
MAX_RETRIES = 100  # retries after the first attempt
MAX_SECONDS = 366 * 24 * 3600  # delay, timeout and max_wait_seconds: at most a year (finite: no .inf, no .nan)

PUB_HWM = 1000  # events queued per slow subscriber before they are dropped (followers fill gaps by GET_LOGS)
PUB_EVENT_BYTES = 32 * 1024  # log events are split to stay under this: a slow subscriber queues <= HWM x this
PUB_MAX_PREFIX = 1024  # longest subscription prefix the broker's XPUB accepts (a longer one drops the connection)
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
JOURNAL_RECORD_MAX = 8 * 1024 * 1024  # a journal record larger than this is quarantined at start-up, not loaded
RETAIN_SECONDS = 7 * 86400.0  # finished runs leave memory, the store and the logs this long after they finish...
RETAIN_RUNS = 10_000  # ...or once more finished runs than this are kept (the oldest first)
RETENTION_INTERVAL = 1.0  # seconds between the broker's retention passes...
RETENTION_SLICE = 5000  # ...each deleting at most about this many journal keys (a backlog takes several passes)
RECOVERY_PAGE_TIMEOUT = 30.0  # seconds the store may take to answer one page of the journal at start-up
RESTORE_GRACE = 8.0  # after a restart, seconds a RUNNING job waits for its worker to report it

LOG_BATCH_LINES = 500  # a worker sends at most this many lines per LOG_BATCH...
LOG_BATCH_BYTES = 64 * 1024  # ...or this many bytes
LOG_FLUSH_INTERVAL = 0.02  # seconds a partial batch may wait before it is sent
LOG_MAX_LINE = 16 * 1024  # longer lines are split
RUNS_PAGE = 1000  # LIST_RUNS returns at most this many runs per reply (`titan runs --all` pages)
LOG_PAGE_LINES = 20_000  # GET_LOGS returns at most this many lines per page

FSYNC = "always"  # store AOF fsync policy: always | everysec | no
COMPACT_MIN_BYTES = 64 * 1024 * 1024  # auto-compact the AOF once it is this large...
COMPACT_RATIO = 4.0  # ...and this many times the size of the live data
COMPACT_MIN_DELETES = 1000  # also compact once this many keys were deleted since the last compaction (and
#                             they outnumber the live keys): finished runs leaving the store shrink the file
KEYS_PAGE = 10_000  # a prefix query (KV_KEYS) returns at most this many keys per reply...
KEYS_PAGE_BYTES = 4 * 1024 * 1024  # ...and stops once it holds about this many bytes of keys and values

# Worker hardening: nothing that grows with user data runs on the worker's loop, and what it does is capped.
WORKER_THREADS = 2  # threads that prepare attempts (archives, scripts) off the worker's loop
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # a project archive larger than this is refused
MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024  # a project that unpacks to more than this is refused...
MAX_UNPACK_RATIO = 200  # ...or to more than this many times its archive's size (a zip bomb); 0 = no check
UNPACK_RATIO_FREE_BYTES = 64 * 1024 * 1024  # projects that unpack to no more than this skip the ratio check
KEEP_FAILED_HOURS = 24.0  # workspaces of failed attempts are kept this long for a look (0 = removed at once)
SWEEP_INTERVAL = 300.0  # seconds between a worker's sweeps of expired failed workspaces

MAX_LOG_BYTES = 256 * 1024 * 1024  # per job on the broker's disk; later lines are dropped with a marker

# Approval gates and agent runs (issue 10).
GATE_MAX_WAIT = 172_800.0  # seconds a gate waits for a decision when max_wait_seconds is not given (48 h)
GATES_PAGE = 500  # decided gates listed per LIST_GATES reply at most (pending ones are always all listed)
AGENT_RUNS_PAGE = 500  # agent runs listed per LIST_AGENT_RUNS reply at most

# Notification hook (titan-broker --notify-url): a sender thread per URL, never the broker's loop.
NOTIFY_QUEUE = 10_000  # events waiting per URL; when full, the oldest is dropped (and counted)
NOTIFY_TIMEOUT = 5.0  # seconds one POST may take
NOTIFY_BACKOFF = 0.5  # seconds before the first retry of a failed POST (doubles each time)...
NOTIFY_BACKOFF_MAX = 8.0  # ...up to this
NOTIFY_WINDOW = 3600.0  # an event not delivered within this many seconds of its creation is dropped

# Services (type: service): a supervised process with a port, a health check and a restart policy.
SERVICE_RESTART = "on-failure"  # restart policy unless a service says: always | on-failure | never
SERVICE_MAX_RESTARTS = 5  # more exits than this within restart_window: the service ends FAILED (a crash loop)
SERVICE_RESTART_WINDOW = 60.0  # seconds over which exits are counted for the crash-loop rule
SERVICE_STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when a service is stopped
SERVICE_BACKOFF = 1.0  # seconds before the first restart; doubles with each exit in the window...
SERVICE_BACKOFF_MAX = 60.0  # ...up to this
HEALTH_INTERVAL = 0.1  # seconds between health checks while a service is STARTING
HEALTH_TIMEOUT = 1.0  # seconds one health check may take (connect, HTTP answer, command)

# Schedules (cron) and elastic workers
SCHEDULE_HISTORY = 20  # recent fires (and skips) kept per schedule
CATCHUP_MAX = 100  # catchup: all runs at most this many missed ticks (the newest); the rest are logged as dropped
SCHEDULE_QUEUE_MAX = 10  # overlap: queue keeps at most this many ticks waiting for the previous run
LAUNCH_MAX_SILENCE = 120.0  # a worker the broker launched exits once the broker was silent this long
SCALE_UP_AFTER = 2.0  # autoscaler: jobs waited this long with no free slot -> launch a worker
IDLE_TIMEOUT = 45.0  # autoscaler: an ephemeral worker idle this long is drained (never below the pool's min)
AUTOSCALE_INTERVAL = 0.5  # autoscaler: seconds between looks at the broker's figures
LAUNCH_TIMEOUT = 20.0  # autoscaler: a launched worker not registered after this long counts as a failed launch
LAUNCH_BACKOFF_MAX = 60.0  # autoscaler: failed launches back off 1 s, 2 s, 4 s ... up to this
AUTOSCALE_DECISIONS = 50  # the broker keeps this many of the autoscaler's latest decisions (stats, UI)
