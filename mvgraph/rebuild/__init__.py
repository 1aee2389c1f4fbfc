"""Rebuild: change a table's structure or a materialized view's query online, dependents
included (Hologres' ASYNC REBUILD; SPEC section 6)."""
