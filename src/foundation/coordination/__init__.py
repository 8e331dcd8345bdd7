"""Coordination on KV compare-and-set: leader election, locks, barriers, cluster config."""
