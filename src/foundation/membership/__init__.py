"""Membership: node records with TTL leases, the renewal thread, the live view and snapshots."""
