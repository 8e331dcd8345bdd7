"""Peer benchmarks: the same workloads on Ray actors, AutoGen core and our runtime.

Peers are not project dependencies. :mod:`bench.peers._env` creates a separate virtualenv
(``.bench-peers/``) and installs them there on first use (never in ``--smoke`` runs). Each
workload is a standalone script run as a subprocess (peers in their virtualenv, ours in the
project's) that prints one JSON object of raw samples on its last line of output:
``{"peer": ..., "version": ..., "figures": {name: {"unit": ..., "samples": [...]}}}``.
"""
