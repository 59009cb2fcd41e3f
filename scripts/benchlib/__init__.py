"""Helpers for scripts/bench.py: a lean HTTP/1.1 client, process control, payloads."""
