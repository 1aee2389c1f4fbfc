"""``python -m mvgraph`` runs the command line."""

from mvgraph.cli import main

if __name__ == "__main__":
    main()
