"""The dispatcher's version, in core so that any layer (the hosts registry's heartbeat) can name it
without importing the ``dispatcher`` package facade (whose ``__getattr__`` reaches the Celery app)."""

__version__ = "0.1.0"
