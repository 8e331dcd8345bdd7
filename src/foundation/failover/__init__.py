"""Failover and rebalancing: the leader re-places agents of dead nodes and fills joined ones."""
