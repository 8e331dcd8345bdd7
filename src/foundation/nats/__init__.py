"""NATS plumbing: connections, the compare-and-set KV layer, the embedded server launcher and
child-process hygiene."""
