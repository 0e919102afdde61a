"""Celery settings for ``celery -A dispatcher`` (worker, beat, flower, call).

Broker and results come from $REDIS_URL or the dispatcher config's
``redis_url`` (``dispatcher up`` exports the embedded server's URL). Without
either, and without a running ``up`` for the config, importing this raises a
ConfigError that says what to do (never a guessed localhost Redis).
"""

from __future__ import annotations

from kombu import Queue

from dispatcher.core.config import no_config_error
from dispatcher.core.errors import ConfigError
from dispatcher.store.config_file import load_config
from dispatcher.store.hosts import CLUSTER_QUEUE, host_queue
from dispatcher.store.redis_conn import celery_url, configured_url

try:
    _settings = load_config()
    if _settings.source is None and not _settings.redis_url:
        raise no_config_error(cli_option=False)
    _url = configured_url(_settings)
except ConfigError as exc:
    # Celery would bury this under a long traceback: say it plainly and stop `celery -A dispatcher …`.
    raise SystemExit(f"celery -A dispatcher: config error: {exc}") from None

broker_url = result_backend = celery_url(_url)
broker_connection_retry_on_startup = True
# A launch waits for an agent to boot: keep un-acked tasks invisible long enough.
broker_transport_options = {"visibility_timeout": 3600}

# JSON only: task arguments come from files and operators, never pickle.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
result_expires = 3600

# At-least-once delivery; every task is idempotent, so a redelivery is harmless.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Flower sees everything: its task states come from these events, not from the result backend.
worker_send_task_events = True
task_send_sent_event = True
# STARTED in the result backend is one more Redis write per message that only AsyncResult.state readers see:
# kept for assign_next (the command users call by hand, workers/assign.py), off for the internal passes.
task_track_started = False

imports = ("workers.scan", "workers.assign", "workers.monitor")

# Several hosts (docs/multi-host.md): a worker consumes the cluster's queue and its own host's queue
# (everything that touches this host's tmux panes); the router sends each message where it belongs.
task_default_queue = CLUSTER_QUEUE
task_queues = (Queue(CLUSTER_QUEUE), Queue(host_queue(_settings.host.name)))
task_routes = ("dispatcher.flows.routing.route",)
# Exactly one beat schedules for the whole cluster, however many hosts run one (a Redis lease).
beat_scheduler = "dispatcher.flows.beat_leader:LeaderScheduler"
beat_max_loop_interval = 5

beat_schedule = {
    "full-scan": {"task": "full_scan", "schedule": _settings.scan_interval,
                  "options": {"expires": _settings.scan_interval}},
    "monitor-sessions": {"task": "monitor_sessions", "schedule": _settings.monitor_interval,
                         "options": {"expires": _settings.monitor_interval}},
    "check-blocked": {"task": "check_blocked", "schedule": max(_settings.scan_interval, 30.0),
                      "options": {"expires": max(_settings.scan_interval, 30.0)}},
}
