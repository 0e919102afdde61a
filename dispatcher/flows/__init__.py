"""Use cases that combine the adapters: dispatch, monitor, recover, resume, scan, status, up.

Celery tasks (``workers/``), the CLI and the web page call these; these call the adapters and the core.
"""
