"""Test helpers shipped with the package (the fake agent is used by tests, benchmarks and docker)."""
