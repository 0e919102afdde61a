"""The core: task files, dependencies, ordering, screens and limits as pure values and rules.

Nothing here talks to Redis, Celery, tmux or a subprocess; the layers above
gather facts and hand them in, so every rule here is unit-tested on plain data.
"""
