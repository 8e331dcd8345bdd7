"""Hosting agents on a node: the ``Clustered`` mixin, the fenced state store, activation."""
