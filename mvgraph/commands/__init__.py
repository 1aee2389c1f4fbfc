"""Command groups of the CLI (each a typer app that mvgraph.cli mounts)."""
