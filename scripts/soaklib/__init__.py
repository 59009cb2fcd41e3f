"""Helpers of scripts/soak.py: the faulty fake provider process, mitmdump, clients, records."""
