"""``python -m mvgraph`` runs the command line."""

from mvgraph.entry import main

if __name__ == "__main__":
    main()
