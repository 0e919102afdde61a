"""Every default and tunable, documented once (arq's constants.py, RQ's defaults.py)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

QUEUE_DIR: Final = ".agent-queue"
INBOX: Final = "inbox"
DONE: Final = "done"
TASK_SUFFIX: Final = ".md"

#: Marker suffixes appended to ``<id>.md`` inside inbox/ (design §2).
BLOCKED: Final = ".blocked"
STUCK: Final = ".stuck"
INVALID: Final = ".invalid"
LAUNCHING: Final = ".launching"
DISPATCHED: Final = ".dispatched"
FAILED: Final = ".failed"

#: Separators allowed between a task ID and a suffix in done/ (``T1-20260101.md``).
DONE_SEPARATORS: Final = "-_.@"

#: Task files larger than this are refused (configurable: ``max_task_bytes``).
MAX_TASK_BYTES: Final = 1024 * 1024
#: Parsed task files kept between scans (least recently used go first): warm scans of up to this many
#: pending files read no file. 200,000 covers the 100 projects × 1,000 tasks the scan is sized for.
PARSE_CACHE_ENTRIES: Final = 200_000
#: Frontmatter larger than this is refused.
MAX_FRONTMATTER_BYTES: Final = 16 * 1024
#: Deeper frontmatter is refused before YAML parses it ([[[[… 5,000 deep costs PyYAML ~0.5 s of CPU).
MAX_FRONTMATTER_DEPTH: Final = 20
#: A file whose frontmatter is not closed is "incomplete" this long, then invalid.
INCOMPLETE_GRACE_S: Final = 30.0
#: A file no watcher saw closed by its writer is dispatched only once unchanged this long.
SETTLE_TIME_S: Final = 2.0

PRIORITIES: Final = ("critical", "high", "default", "low")
DEFAULT_PRIORITY: Final = "default"
MODELS: Final[Mapping[str, str]] = MappingProxyType(
    {"critical": "opus", "high": "sonnet", "default": "sonnet", "low": "sonnet"}
)

POOL_PREFIX: Final = "ccl-auto-"
POOL_START_INDEX: Final = 0
POOL_MAX: Final = 3
POOL_COOLDOWN_S: Final = 300.0
TMUX_WIDTH: Final = 200
TMUX_HEIGHT: Final = 50
TMUX_SOCKET: Final = "agent-queue"
#: new-session attempts while a just-killed tmux server is still exiting ("server exited unexpectedly").
TMUX_NEW_SESSION_TRIES: Final = 6

AGENT_COMMAND: Final = "claude --model {model} --dangerously-skip-permissions {resume}"
PROMPT_TIMEOUT_S: Final = 60.0
SUBMIT_TIMEOUT_S: Final = 10.0
SUBMIT_RETRIES: Final = 3
POLL_INTERVAL_S: Final = 0.05
#: A launch polls the pane this often for its first FAST_POLL_FOR_S (a fast agent is ready, or has taken the
#: Enter, within tens of ms: at POLL_INTERVAL_S half of that went to waiting), then every POLL_INTERVAL_S.
FAST_POLL_S: Final = 0.01
FAST_POLL_FOR_S: Final = 0.15
#: With the pane's output as a doorbell (agent/pane_output.py) a launch looks at a silent pane this often
#: (a pane that died writes nothing; the doorbell may have failed).
SILENT_PANE_LOOK_S: Final = 0.25
MESSAGE_FOOTER: Final = (
    "IMPORTANT: you must EXECUTE the requested actions, not only describe them. "
    "When the task is finished, move its file to {queue_dir}/done/{task_file} "
    "(mv {queue_dir}/inbox/{task_file}.dispatched {queue_dir}/done/{task_file})."
)

SCAN_INTERVAL_S: Final = 60.0
MONITOR_INTERVAL_S: Final = 5.0
BLOCKED_TIMEOUT_S: Final = 3600.0
#: A queued full_scan (``aq:scan-pending``) whose message was lost stops deduplicating after this long.
SCAN_PENDING_TTL_S: Final = 60
#: Session lock TTL; renewed every third of it while held, so a killed worker frees its session within it.
LAUNCH_LOCK_TTL_S: Final = 30.0
MAX_LAUNCH_ATTEMPTS: Final = 3
#: Tasks of one project sharing one checkout that may run at once (docs/decisions.md: why 1).
MAX_PARALLEL: Final = 1
#: ``isolation: worktree``: ``<project>/.agent-queue/worktrees/<id>`` on branch ``aq/<id>``.
WORKTREES_DIR: Final = "worktrees"
WORKTREE_BRANCH_PREFIX: Final = "aq/"
GIT_TIMEOUT_S: Final = 60.0
#: How long ``worktree.merge_command`` may run on finish before it counts as failed.
MERGE_TIMEOUT_S: Final = 300.0
#: A claim's reservation of a project slot (store/running.py) without a running file is pruned after this long
#: (its claimer died between count and rename); a live claimer that slow finds out at its confirm.
RUNNING_RESERVATION_GRACE_S: Final = 5.0
FINISH_GRACE_S: Final = 30.0

#: A host whose heartbeat is older than this is lost: its tasks go to other hosts.
HOST_LOST_AFTER_S: Final = 60.0
#: Heartbeats per ``host_lost_after`` (a host survives a few missed beats).
HEARTBEATS_PER_LOST: Final = 6
#: The Claude account of a host when none is configured (usage limits pause per account).
ACCOUNT: Final = "default"

#: API rate limit (429) / overload (529) without a stated wait: pause this long, doubling per repeat…
RATE_LIMIT_PAUSE_S: Final = 60.0
#: …up to this (configurable: ``limits.rate_limit_pause``, ``limits.rate_limit_max_pause``).
RATE_LIMIT_MAX_PAUSE_S: Final = 1800.0
#: The backoff starts over after this long without a rate limit (or at once when a task finishes).
RATE_LIMIT_QUIET_S: Final = 3600.0
#: Longest wait taken from an API message ("retry after N"); a hostile or absurd number is capped.
RETRY_AFTER_MAX_S: Final = 6 * 3600.0
#: A usage limit whose reset time cannot be read pauses the pool this long.
USAGE_LIMIT_FALLBACK_S: Final = 3600.0
#: How long a project whose folder the agent does not trust is held (then tried again).
PROJECT_HOLD_S: Final = 600.0
#: How long the pool pauses when the agent executable is missing (then it checks again).
AGENT_MISSING_PAUSE_S: Final = 60.0

FLOWER_ADDRESS: Final = "127.0.0.1"
FLOWER_PORT: Final = 5555
#: Without FLOWER_BASIC_AUTH, ``up`` generates ``admin:<random>`` once into this state_dir file (0600), for Flower
#: and the fleet page alike (credentials.py).
FLOWER_AUTH_FILE: Final = "web-auth"

#: ``up`` gives a configured Redis this long to answer PING before it stops with the reason.
REDIS_CHECK_TIMEOUT_S: Final = 10.0

CONFIG_ENV: Final = "DISPATCHER_CONFIG"
CONFIG_FILE: Final = "dispatcher.yaml"
STATE_DIR: Final = ".state"
#: In the state dir: flock-ed by the running ``dispatcher up`` of this deployment (holds its pid).
UP_LOCK_FILE: Final = "up.lock"

# -- the operator's view (fleet page, doctor, notifications, logs) -------------
#: The fleet page (``dispatcher web``): loopback unless configured (``web.address``, ``web.port``).
WEB_ADDRESS: Final = "127.0.0.1"
WEB_PORT: Final = 5556
#: How often the page's live stream recomputes the fleet (seconds).
WEB_REFRESH_S: Final = 1.0
#: Screen lines shown per session on the page, and sessions whose screens are captured per refresh.
WEB_SCREEN_LINES: Final = 14
WEB_MAX_SCREENS: Final = 32
#: Tasks listed per project and state on the page (the counts are always complete).
WEB_TASKS_PER_STATE: Final = 50
#: Recently done tasks listed per project.
WEB_RECENT_DONE: Final = 10
#: Pending tasks drawn in the page's graph (stuck and blocked first; the rest is counted, not drawn).
WEB_GRAPH_MAX_NODES: Final = 300
#: Events sent when the page connects.
WEB_EVENTS_BACKLOG: Final = 100
#: Largest request body an action accepts.
WEB_MAX_BODY: Final = 16 * 1024
#: Notifications: a command/webhook gets this long; at most this many per kind and minute.
NOTIFY_TIMEOUT_S: Final = 10.0
NOTIFY_PER_MINUTE: Final = 6
#: ``dispatcher doctor``: free space below this fails (bytes).
DOCTOR_MIN_FREE_BYTES: Final = 1024 * 1024 * 1024
#: ``dispatcher doctor``: a host unseen this long, or a clock this far off, fails (seconds).
DOCTOR_HOST_STALE_S: Final = 120.0
DOCTOR_MAX_SKEW_S: Final = 5.0
#: ``dispatcher up``: component logs rotate at this size, keeping this many old files.
LOG_MAX_BYTES: Final = 5 * 1024 * 1024
LOG_BACKUPS: Final = 3

#: Default ``agent.resume_dir``, under state_dir: one per deployment (``~/.claude-context`` is the reference's).
RESUME_DIR: Final = "resume"

# -- internal timings and Redis record lifetimes (not configurable) --------------
#: Failed-attempt counters (flows/dispatch.py) are forgotten after a week without failures.
ATTEMPTS_TTL_S: Final = 7 * 86400
#: A queued assign_next whose message was lost stops deduplicating after this long (beat re-sends).
ASSIGN_PENDING_TTL_S: Final = 60
#: A claim younger than this may not have its flock yet (link → open → flock), so recovery leaves it alone.
CLAIM_GRACE_S: Final = 10.0
#: Owner records (store/owners.py) outlive any task run; a forgotten one only costs memory for a week.
OWNER_RECORD_TTL_S: Final = 7 * 86400
#: An owner tombstone is read by a returning host; a day is far longer than any outage it must outlive.
OWNER_TOMBSTONE_TTL_S: Final = 86400
#: How long a file version stays "announced" (its submitted event is not repeated).
EVENT_SEEN_TTL_S: Final = 86400
#: A watcher's "closed by its writer" sighting is kept this much longer than settle_time (clock steps, slow queues).
CLOSED_MARGIN_S: Final = 60
#: A dead beat leader is replaced within this many seconds.
BEAT_LEASE_S: Final = 15.0
#: TTL of a host's agent start-up lock; renewed every third of it while an agent starts.
STARTUP_LOCK_TTL_S: Final = 6.0
#: How long to wait for a paste to show in the agent's input box before pressing Enter anyway.
PASTE_SHOW_S: Final = 2.0
#: How long a stopped embedded Redis may take to exit before its temp dir is removed anyway.
REDIS_EXIT_WAIT_S: Final = 10.0
#: ``dispatcher up`` restarts a component that exited after these waits (then the last one, repeatedly).
RESTART_BACKOFF_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
#: Hook reports (``python -m dispatcher.hook``): payloads bigger than this are cut (a pasted task can be
#: large; the tag is at its start), and Redis gets this long to answer: the hook sits in the agent's path.
HOOK_MAX_PAYLOAD_BYTES: Final = 64 * 1024
HOOK_SOCKET_TIMEOUT_S: Final = 1.0
#: Seconds Claude Code lets one hook command run before killing it (written into the --settings file).
HOOK_TIMEOUT_S: Final = 10
#: TTL of the locks a warm pass holds (renewed while held): a worker killed while warming frees the session this fast.
WARM_LOCK_TTL_S: Final = 3.0
