"""The status page: ``mvgraph web`` and ``mvgraph daemon --http-port`` (the ``web`` extra).

:mod:`mvgraph.web.data` reads (read only, as the page's role), :mod:`mvgraph.web.app` answers
(Starlette, Jinja2 templates, the page's own script and style in ``static/``),
:mod:`mvgraph.web.server` serves (uvicorn), :mod:`mvgraph.web.mount` puts the page on the
daemon's HTTP port. This module imports none of them: :func:`require_extra` says, in one line,
what to install when the extra is missing.
"""

from __future__ import annotations

import importlib.util

from mvgraph.errors import UsageError

#: What the ``web`` extra installs (the import names).
EXTRA_MODULES = ("starlette", "uvicorn", "jinja2")


def missing_modules() -> list[str]:
    """The modules of the ``web`` extra that are not installed."""
    return [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]


def require_extra(what: str = "mvgraph web") -> None:
    """Raise a usage error naming the install command when the ``web`` extra is missing.

    Raises:
        UsageError: starlette, uvicorn or jinja2 is not installed.
    """
    missing = missing_modules()
    if missing:
        raise UsageError(f"{what} needs the web extra ({', '.join(missing)} missing): "
                         "pip install 'mvgraph[web]'")
