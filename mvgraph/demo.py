"""``mvgraph demo``: load the example schemas into the embedded server and show the graph."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mvgraph.api import load_graph
from mvgraph.db import embedded
from mvgraph.db.connect import connect
from mvgraph.db.migrate import migrate
from mvgraph.db.scripts import recreate_database, run_files, with_dbname
from mvgraph.errors import UsageError
from mvgraph.render import deps_tree, graph_tree

DEMO_DB = "mvgraph_demo"


def fixtures_dir() -> Path:
    """The repository's ``fixtures`` folder (the demo runs from a source checkout)."""
    here = Path(__file__).resolve().parent.parent / "fixtures"
    if not here.is_dir():
        raise UsageError(f"demo fixtures not found at {here}; run the demo from a checkout "
                         "installed with `pip install -e .`")
    return here


def run_demo(console: Console, keep: bool = True) -> str:
    """Create the demo database, load the fixtures, print the graphs; returns the demo DSN."""
    base = fixtures_dir()
    console.rule("[bold]mvgraph demo")
    uri = embedded.start()
    console.print(f"embedded PostgreSQL running, data in {embedded.data_dir()}")
    with connect(uri) as admin:
        recreate_database(admin, DEMO_DB)
    dsn = with_dbname(uri, DEMO_DB)
    files = sorted((base / "gaussdb_nested").glob("*.sql")) + sorted(
        (base / "analytics").glob("*.sql"))
    with connect(dsn) as conn:
        migrate(conn)
        run_files(conn, files)
        console.print(f"loaded {len(files)} SQL files into database {DEMO_DB}")
        graph = load_graph(conn=conn)
    from_files = load_graph(sql=files)
    console.print(graph_tree(graph.subgraph(graph.select("+public.mv6+")),
                             "GaussDB nested example (public)"))
    mvs = [n for n in graph.g if graph.kind(n).value == "matview"]
    console.print(f"\nwhole database: {len(graph)} relations, {len(mvs)} materialized views, "
                  f"{graph.g.number_of_edges()} dependencies, {len(graph.layers())} layers")
    deepest = max(graph.order(), key=lambda n: (len(graph.upstream(n)), str(n)))
    console.print(deps_tree(graph, deepest, up=True, down=False))
    same = "the same" if not _differs(from_files, graph) else "DIFFERENT"
    console.print(f"\ngraph from the SQL files and graph from the catalog are {same}")
    console.print(f"try: mvgraph graph --dsn embedded ... or mvgraph --dsn '{dsn}' graph")
    if not keep:
        with connect(uri) as admin:
            recreate_database(admin, DEMO_DB)
    return dsn


def _differs(a: object, b: object) -> bool:
    from mvgraph.graph import MVGraph, diff

    assert isinstance(a, MVGraph) and isinstance(b, MVGraph)
    return not diff(a, b).empty
