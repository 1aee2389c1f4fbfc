"""Refreshing: behaviours and plans (pure), change facts (I/O), and the executor (I/O)."""
