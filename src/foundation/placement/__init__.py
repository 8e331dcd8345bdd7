"""Placement: which node runs a new (or failed-over) agent; strategies and the director."""
