"""Messaging between nodes: the request envelope, refs, the cluster bus and agent inboxes."""
