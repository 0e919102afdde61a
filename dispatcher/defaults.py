"""Every default and tunable, documented once (arq's constants.py, RQ's defaults.py)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, Mapping

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
#: Frontmatter larger than this is refused.
MAX_FRONTMATTER_BYTES: Final = 16 * 1024
#: A file whose frontmatter is not closed is "incomplete" this long, then invalid.
INCOMPLETE_GRACE_S: Final = 30.0

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

AGENT_COMMAND: Final = "claude --model {model} --dangerously-skip-permissions {resume}"
PROMPT_TIMEOUT_S: Final = 60.0
SUBMIT_TIMEOUT_S: Final = 10.0
SUBMIT_RETRIES: Final = 3
POLL_INTERVAL_S: Final = 0.05
MESSAGE_FOOTER: Final = (
    "IMPORTANT: you must EXECUTE the requested actions, not only describe them. "
    "When the task is finished, move its file to .agent-queue/done/{task_file} "
    "(mv .agent-queue/inbox/{task_file}.dispatched .agent-queue/done/{task_file})."
)

SCAN_INTERVAL_S: Final = 60.0
MONITOR_INTERVAL_S: Final = 5.0
BLOCKED_TIMEOUT_S: Final = 3600.0
#: Session lock TTL; renewed every third of it while held, so a killed worker frees its session within it.
LAUNCH_LOCK_TTL_S: Final = 30.0
MAX_LAUNCH_ATTEMPTS: Final = 3
FINISH_GRACE_S: Final = 30.0

FLOWER_ADDRESS: Final = "127.0.0.1"
FLOWER_PORT: Final = 5555
#: Without FLOWER_BASIC_AUTH, ``up --flower`` generates ``<FLOWER_USER>:<random>`` once into this state_dir file (0600).
FLOWER_AUTH_FILE: Final = "flower-auth"
FLOWER_USER: Final = "admin"

#: ``up`` gives a configured Redis this long to answer PING before it stops with the reason.
REDIS_CHECK_TIMEOUT_S: Final = 10.0

CONFIG_ENV: Final = "DISPATCHER_CONFIG"
CONFIG_FILE: Final = "dispatcher.yaml"
STATE_DIR: Final = ".state"
#: Default ``agent.resume_dir``, under state_dir: one per deployment (``~/.claude-context`` is the reference's).
RESUME_DIR: Final = "resume"
