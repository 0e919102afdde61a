"""The CLI sends Celery messages to the Redis of the config it was given, from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis
import yaml

from dispatcher.store.hosts import CLUSTER_QUEUE


def test_scan_with_an_explicit_config_asks_that_deployment_for_a_full_scan(tmp_path: Path,
                                                                          sys_redis: redis.Redis[str],
                                                                          sys_redis_url: str) -> None:
    deployment, elsewhere = tmp_path / "deployment", tmp_path / "elsewhere"
    deployment.mkdir()
    elsewhere.mkdir()
    cfg = deployment / "dispatcher.yaml"
    cfg.write_text(yaml.safe_dump({"redis_url": sys_redis_url}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPATCHER_CONFIG", "REDIS_URL", "AQ_PROJECTS_DIR")}

    out = subprocess.run([sys.executable, "-m", "dispatcher", "-c", str(cfg), "scan"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert "full_scan requested" in out.stdout
    # Cluster-wide work goes to the cluster's queue (docs/multi-host.md).
    queued = [json.loads(m)["headers"]["task"] for m in sys_redis.lrange(CLUSTER_QUEUE, 0, -1)]
    assert queued == ["full_scan"]
