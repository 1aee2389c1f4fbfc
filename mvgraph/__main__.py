"""``python -m mvgraph`` runs the command line."""

from mvgraph.cli import main

main()
