"""Shared state in Redis (and the few files under state_dir): sessions, locks, owners, pauses, events, hosts.

Every Redis key is named in ``dispatcher.core.keys``; each concept has one module here that reads and writes it.
"""
