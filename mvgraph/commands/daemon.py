"""``mvgraph daemon``: fire schedules and run their jobs; ``mvgraph daemon status``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import JsonOpt
from mvgraph.commands.options import ShortDsnOpt as DsnOpt
from mvgraph.commands.render import escape

if TYPE_CHECKING:
    from mvgraph.scheduler.health import Health
    from mvgraph.scheduler.metrics import Metrics
    from mvgraph.scheduler.run import Served

daemon_app = typer.Typer(help="The scheduler daemon: fires schedules (each due slot exactly once "
                              "across daemons) and runs their jobs.",
                         rich_markup_mode=None)


def _dsn(local: str | None) -> str:
    return common.target(local)


@daemon_app.callback(invoke_without_command=True)
def daemon_cmd(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(
        "--workers", "-w", min=0, help="Jobs this daemon runs at once (0: only fire schedules; "
                                       "`mvgraph worker` processes run the jobs).")] = 1,
    misfire_grace: Annotated[float, typer.Option(
        "--misfire-grace", min=0, help="Seconds a slot missed while no daemon ran may be late "
                                       "and still run (coalesced into one catch-up run); older "
                                       "ones are recorded missed.")] = 60.0,
    resync: Annotated[float, typer.Option(
        "--resync", min=0.1, help="Seconds between full reloads of the schedules (changes "
                                  "arrive by NOTIFY within a second anyway).")] = 30.0,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", min=0, help="On SIGTERM/SIGINT, seconds running jobs may finish "
                                          "before they are cancelled and requeued.")] = 30.0,
    log_json: Annotated[bool, typer.Option(
        "--log-json", help="Log JSON lines (time, level, event, message, schedule, job, "
                           "slot).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535,
        help="Serve Prometheus /metrics and /healthz (answered from the daemon's heartbeat, no "
             "database connection per request) on this port.", show_default=False)] = None,
    metrics_host: Annotated[str, typer.Option(
        "--metrics-host",
        help="Address the metrics port listens on. Anything but localhost (127.0.0.1, ::1) "
             "exposes unauthenticated metrics and health to the network (e.g. 0.0.0.0: every "
             "interface).")] = "127.0.0.1",
    http_port: Annotated[int | None, typer.Option(
        "--http-port", min=0, max=65535,
        help="Serve the read-only status page (as `mvgraph web`, needs the web extra) on this "
             "port; the --metrics-port may be the same, then /metrics and /healthz are served "
             "there too.", show_default=False)] = None,
    http_host: Annotated[str | None, typer.Option(
        "--http-host", show_default=False,
        help="Address the status page listens on (default 127.0.0.1; the --metrics-host when "
             "the ports are shared). Anything but localhost needs --http-token.")] = None,
    http_token: Annotated[str | None, typer.Option(
        "--http-token", show_default=False,
        help="Secret every request to the status page must carry (as `mvgraph web "
             "--token`).")] = None,
    alert_webhook: Annotated[str | None, typer.Option(
        "--alert-webhook",
        help="POST each alert's JSON (also NOTIFYed on mvgraph_events) to this http(s) URL, "
             "retried with backoff from a thread of its own (never delaying a firing).",
        show_default=False)] = None,
    alert_heartbeat_s: Annotated[float, typer.Option(
        "--alert-heartbeat-s", min=1,
        help="Alert a daemon or worker whose heartbeat stopped this many seconds ago.")] = 60.0,
    dsn: DsnOpt = None,
) -> None:
    """Fire schedules and run their jobs until stopped (SIGTERM / Ctrl-C: fire nothing more,
    let running jobs finish, requeue the rest). Subcommand: status."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from mvgraph.db.connect import check_before_start
    from mvgraph.redaction import install
    from mvgraph.scheduler.daemon import DaemonConfig, JsonLines
    from mvgraph.scheduler.run import run

    target = _dsn(dsn)
    http = _status_page(target, http_port, http_host, http_token, metrics_port, metrics_host)
    shared = http is not None and http_port == metrics_port
    check_before_start(target)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_json else
                         logging.Formatter("%(asctime)s %(name)s %(message)s"))
    install(handler)  # every record it writes is scrubbed of passwords
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    run(DaemonConfig(target, workers, misfire_grace_s=misfire_grace, resync_s=resync,
                     shutdown_s=shutdown_timeout, alert_webhook=alert_webhook or None,
                     alert_heartbeat_s=alert_heartbeat_s), None if shared else metrics_port,
        metrics_host, http)


def _status_page(dsn: str, port: int | None, host: str | None, token: str | None,
                 metrics_port: int | None, metrics_host: str
                 ) -> Callable[[Metrics, Health], Served] | None:
    """``--http-port``: the status page's socket, bound now (a port in use fails before the
    daemon starts), and the hook that serves it beside the daemon; None without the option."""
    if port is None:
        return None
    from mvgraph.errors import UsageError
    from mvgraph.web import require_extra

    require_extra("mvgraph daemon --http-port")
    from mvgraph.web.mount import start
    from mvgraph.web.server import WebConfig, bind

    shared = port == metrics_port and port != 0
    if shared and host is not None and host != metrics_host:
        raise UsageError("--http-port is the --metrics-port: one server answers both, so "
                         "--http-host must be the --metrics-host (or left out)")
    config = WebConfig(host=host or (metrics_host if shared else "127.0.0.1"), port=port,
                       token=token)
    config.check("--http-host", "--http-token", "MVGRAPH_DAEMON_HTTP_TOKEN")
    what = "the status page and metrics" if shared else "the status page"
    sock = bind(config.host, port, what, "--http-host and --http-port")

    def serve(metrics: Metrics, health: Health) -> Served:
        return start(dsn, config, sock, metrics if shared else None, health)

    return serve


@daemon_app.command("status")
def status_cmd(
    within: Annotated[float, typer.Option(
        "--within", min=0.1, help="A daemon is live if its heartbeat is this recent "
                                  "(seconds).")] = 10.0,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """List live daemons: name (host:pid), started, last heartbeat, workers, schedules fired,
    jobs running now."""
    from datetime import UTC, datetime

    from mvgraph.db.connect import connect
    from mvgraph.db.install import require_schema
    from mvgraph.scheduler.daemon import live_daemons

    with connect(_dsn(dsn)) as conn:
        require_schema(conn)
        found = live_daemons(conn, within)
    if as_json:
        sys.stdout.write(json.dumps([d.to_dict() for d in found], indent=2) + "\n")
        return
    if not found:
        common.out.print(f"no live daemon (no heartbeat in the last {within:g}s); start one with "
                         "`mvgraph daemon`")
        return
    now = datetime.now(UTC)
    for d in found:
        ago = (now - d.heartbeat_at).total_seconds()
        jobs = ", ".join(str(j) for j in d.running_jobs) or "none"
        common.out.print(escape(
            f"{d.name}  v{d.version}  started {d.started_at:%Y-%m-%d %H:%M:%S%z}  "
            f"heartbeat {ago:.1f}s ago  workers {d.workers}  "
            f"schedules {d.schedules}  running jobs: {jobs}"))
