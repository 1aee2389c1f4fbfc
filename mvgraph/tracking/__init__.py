"""Change tracking back ends other than the statement triggers (see mvgraph.refresh.changes)."""
