"""Rollouts: the pure decision (decide.py) and the crash-safe loop that applies it (reconcile.py)."""
