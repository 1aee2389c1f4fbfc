"""``mvgraph demo``: load the example schemas into the embedded server and show the graph."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console

from mvgraph.api import load_graph
from mvgraph.commands.render import deps_tree, graph_tree
from mvgraph.db import embedded
from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.queries import query
from mvgraph.db.scripts import drop_database, recreate_database, run_files
from mvgraph.errors import UsageError

DEMO_DB = embedded.DATABASE  # the database --embedded connects to


def examples_dir() -> Path:
    """The example schemas shipped with the package (``mvgraph/examples``)."""
    here = Path(str(resources.files("mvgraph").joinpath("examples")))
    if not here.is_dir():
        raise UsageError(f"the demo's SQL files are missing from {here}; reinstall mvgraph")
    return here


def demo_files() -> list[Path]:
    """The demo's SQL files in the order they are loaded."""
    base = examples_dir()
    return sorted((base / "gaussdb_nested").glob("*.sql")) + sorted(
        (base / "analytics").glob("*.sql"))


def run_demo(console: Console, keep: bool = True) -> str:
    """Create the demo database, load the examples, print the graphs; returns the demo DSN."""
    files = demo_files()
    console.rule("[bold]mvgraph demo")
    uri = embedded.start(embedded.MAINTENANCE_DATABASE)
    console.print(f"embedded PostgreSQL running, data in {embedded.data_dir()}")
    with connect(uri) as admin:
        recreate_database(admin, DEMO_DB)
    dsn = embedded.start(DEMO_DB)
    with connect(dsn) as conn:
        init(conn)  # the demo installs mvgraph for the user (start() did already: a no-op)
        run_files(conn, files)
        console.print(f"loaded {len(files)} SQL files into database {DEMO_DB}")
        graph = load_graph(conn=conn)
    from_files = load_graph(sql=files)
    console.print(graph_tree(graph.subgraph(graph.select("+public.mv6+")),
                             "GaussDB nested example (public)"))
    mvs = [n for n in graph.nodes() if graph.kind(n).value == "matview"]
    console.print(f"\nwhole database: {len(graph)} relations, {len(mvs)} materialized views, "
                  f"{graph.number_of_edges()} dependencies, {len(graph.layers())} layers")
    deepest = max(graph.order(), key=lambda n: (len(graph.upstream(n)), str(n)))
    console.print(deps_tree(graph, deepest, up=True, down=False))
    same = "the same" if not _differs(from_files, graph) else "DIFFERENT"
    console.print(f"\ngraph from the SQL files and graph from the catalog are {same}")
    _refresh_tour(console, dsn)
    _schedule_tour(console, dsn)
    console.print("\ntry: mvgraph --embedded status   (or graph, plan, refresh ...; "
                  "`mvgraph embedded uri` prints the DSN)")
    if not keep:
        with connect(uri) as admin:
            drop_database(admin, DEMO_DB)
    return dsn


def _refresh_tour(console: Console, dsn: str) -> None:
    """Track writes, refresh once, change a table, then plan and run CASCADE ALL on mv5."""
    import mvgraph
    from mvgraph.commands.render import plan_table, report_table

    console.rule("[bold]refreshing")
    tracked = mvgraph.track(dsn, every=True)
    console.print(f"tracking writes to {len(tracked)} base tables with statement triggers")
    first = mvgraph.refresh(dsn, "*", parallel=2)
    console.print(f"first refresh of everything: {len(first.refreshed)} views refreshed in "
                  f"{first.elapsed_s:.2f}s (job {first.job_id})")
    with connect(dsn) as conn:
        conn.execute("INSERT INTO public.test_table (id, grp, val) VALUES (100, 1, 5)")
    console.print("\n[bold]INSERT INTO public.test_table ...[/] then "
                  "[bold]REFRESH MATERIALIZED VIEW mv5 CASCADE ALL[/]:")
    console.print(plan_table(mvgraph.plan(dsn, "mv5", "cascade all")))
    report = mvgraph.refresh(dsn, "mv5", "cascade all")
    console.print(report_table(report))
    again = mvgraph.refresh(dsn, "mv5", "cascade all")
    console.print(f"running it again refreshes {len(again.refreshed)} views: "
                  f"{again.steps[0].reason}")
    with connect(dsn) as conn:
        conn.execute("UPDATE raw.regions SET region_name = upper(region_name) "
                     "WHERE region_id = 1")
    everything = mvgraph.refresh(dsn, "*", parallel=2)
    console.print(f"\n[bold]UPDATE raw.regions ...[/] then [bold]mvgraph refresh '*'[/]: "
                  f"{len(everything.refreshed)} refreshed, {len(everything.skipped)} skipped "
                  f"as unchanged, in {everything.elapsed_s:.2f}s")
    for step in everything.steps:
        if step.action == "refreshed":
            console.print(f"  refreshed {step.name}: {step.reason}")


def _differs(a: object, b: object) -> bool:
    from mvgraph.graph import MVGraph, diff

    assert isinstance(a, MVGraph) and isinstance(b, MVGraph)
    return not diff(a, b).empty


DAEMON_SECONDS = 4.5  # how long the demo lets the daemon run


def _schedule_tour(console: Console, dsn: str) -> None:
    """Schedule mv6 in GaussDB's syntax, run the daemon (with one worker) for a few seconds in
    this process, and show the runs it fired."""
    import threading

    from mvgraph.frontend import execute_script
    from mvgraph.scheduler import store
    from mvgraph.scheduler.daemon import DaemonConfig
    from mvgraph.scheduler.run import build

    console.rule("[bold]schedules")
    statement = ("ALTER MATERIALIZED VIEW mv6 REFRESH CASCADE BACKWARD "
                 "START WITH (now()) EVERY (interval '1 s')")
    with connect(dsn) as conn:
        for outcome in execute_script(conn, statement, source="demo"):
            console.print(f"[bold]{statement}[/]: {outcome.status}")
            for note in outcome.notices:
                console.print(f"  {note}")
        rows = conn.execute("SELECT what, interval FROM scheduler.pg_task").fetchall()
    for what, interval in rows:
        console.print(f"scheduler.pg_task: {what}, every {interval}")
    daemon, _metrics = build(DaemonConfig(dsn, workers=1, shutdown_s=5.0, resync_s=30.0))
    runner = threading.Thread(target=daemon.run, name="demo daemon", daemon=True)
    console.print(f"running `mvgraph daemon` for {DAEMON_SECONDS:g} seconds ...")
    runner.start()
    runner.join(DAEMON_SECONDS)
    daemon.stop()
    runner.join(15)
    with connect(dsn) as conn:
        schedule = next(s for s in store.schedules(conn) if s.view_name == "public.mv6")
        history = store.history(conn, schedule.id)
        conn.execute(query("demo_pause_schedules"))  # the demo database stays quiet afterwards
    for record in reversed(history):
        console.print(f"  slot {record.slot:%H:%M:%S}: {record.status.value}, job "
                      f"{record.job_id if record.job_id is not None else '-'} "
                      f"{record.job_status or ''}")
    console.print("the schedule is paused now; `mvgraph schedule resume public.mv6` and "
                  "`mvgraph --embedded daemon` run it again")
