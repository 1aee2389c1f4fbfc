"""How a worker gets a job's rights: a connection that logs in as the job's login.

A job records ``owner`` (the role it was submitted as) and ``login`` (the session's login at
submit). The worker runs it on a connection that logs in as ``login``, with ``role`` set to
``owner`` at connection start (``options=-c role=...``) when the two differ; PostgreSQL then
bounds everything the statement does by that login's rights, whatever it does (``SET ROLE``,
``RESET ROLE``, ``SET SESSION AUTHORIZATION``, a ``DO`` block, a function). ``SET ROLE`` alone
cannot confine code, so the worker never runs a job on its own login's session.

How the worker logs in as another role is libpq's business: by default the worker's DSN with
``user`` replaced and the password dropped, so that the password file (``~/.pgpass`` or
``PGPASSFILE``), a client certificate, or peer / trust authentication answers; or a template
given with ``--owner-dsn`` (``MVGRAPH_OWNER_DSN``) in which ``{role}`` stands for the login,
e.g. ``host=db dbname=app user={role} sslcert=/certs/{role}.crt sslkey=/certs/{role}.key``.
A job whose login the worker cannot use fails with one line saying so.
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mvgraph.db.connect import redact, resolve_dsn

OWNER_DSN_ENV = "MVGRAPH_OWNER_DSN"


def _escape_option(value: str) -> str:
    """A value inside libpq's ``options`` (space-separated; backslash escapes)."""
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def owner_dsn(worker_dsn: str | None, login: str, owner: str, *,
              template: str | None = None, worker_user: str | None = None) -> str:
    """The DSN a job runs on: logged in as ``login``, its role set to ``owner``.

    >>> owner_dsn("postgresql://w:pw@db/app", "alice", "alice", worker_user="w")
    'user=alice dbname=app host=db'
    >>> owner_dsn("host=db user=w password=pw", "w", "w", worker_user="w")
    'user=w password=pw host=db'
    >>> owner_dsn("host=db", "bob", "team")
    'host=db user=bob options=-crole=team'
    """
    template = template if template is not None else os.environ.get(OWNER_DSN_ENV)
    if template:
        params = conninfo_to_dict(template.replace("{role}", login))
    else:
        params = conninfo_to_dict(resolve_dsn(worker_dsn))
        if login != (worker_user or params.get("user")):
            params["user"] = login
            params.pop("password", None)  # libpq: password file, certificate, peer or trust
    if owner != login:
        options = str(params.get("options") or "")
        params["options"] = (options + " " if options else "") \
            + f"-crole={_escape_option(owner)}"
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def login_failure(job_id: int, login: str, owner: str, dsn: str, exc: Exception) -> str:
    """The one-line reason a job fails when the worker cannot log in as its login."""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    reason = reason.removeprefix("FATAL:").strip()
    acting = f" acting as {owner}" if owner != login else ""
    return (f"job {job_id}: the worker cannot log in as {login}{acting}, the job's submitter "
            f"({redact(dsn)}: {reason}); give the worker a way to log in as {login} (a "
            "~/.pgpass line, a client certificate, peer or trust authentication, or "
            "--owner-dsn), or submit the job as a role that can log in")
