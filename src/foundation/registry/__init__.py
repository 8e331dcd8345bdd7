"""The distributed agent registry: one CAS record per agent and its watched cache."""
