"""``mvgraph web``: serve the read-only live status page (the ``web`` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import DsnOpt

#: The token's variable (the configuration file's convention, ``MVGRAPH_WEB_<KEY>``, given here
#: so that it is the variable also where the app is used without the file's set-up). Every
#: option below is a setting of ``[web]`` in ``mvgraph.toml`` (:mod:`configfile`).
TOKEN_ENV = "MVGRAPH_WEB_TOKEN"

PortOpt = Annotated[int, typer.Option(
    "--port", min=0, max=65535, help="Port to listen on (0: any free one).")]
HostOpt = Annotated[str, typer.Option(
    "--host", help="Address to listen on. Anything but localhost (127.0.0.1, ::1) needs "
                   "--token.")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar=TOKEN_ENV, show_envvar=True, show_default=False,
    help="Secret every request must carry (Authorization: Bearer TOKEN, or ?token=TOKEN once, "
         "kept in a cookie). Required beyond localhost.")]
PollOpt = Annotated[float, typer.Option(
    "--poll", min=0.2, max=60.0, help="Seconds between the page's updates.")]


def web_cmd(
    port: PortOpt = 8765,
    host: HostOpt = "127.0.0.1",
    token: TokenOpt = None,
    poll: PollOpt = 1.0,
    dsn: DsnOpt = None,
) -> None:
    """Serve a read-only live page: the graph coloured by freshness, jobs with progress bars,
    schedules, daemons and workers. It connects as the DSN's role and shows what that role may
    see; every query runs in a READ ONLY transaction. Ctrl-C stops it."""
    from mvgraph.web import require_extra

    require_extra()
    from mvgraph.db.connect import check_before_start
    from mvgraph.web.server import WebConfig, bind, page_app, serve_forever

    config = WebConfig(host=host, port=port, token=token, poll_s=poll)
    config.check()
    target = common.target(dsn)
    check_before_start(target)  # no schema, or no grant: one line now (a server down: later)
    sock = bind(config.host, config.port)
    app, reader = page_app(target, config)
    shown = f"[{host}]" if ":" in host else host
    common.out.print(f"status page on http://{shown}:{sock.getsockname()[1]}/ (read only"
                     f"{', token required' if token else ''}; Ctrl-C stops)", highlight=False)
    try:
        serve_forever(app, sock)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        sock.close()
