"""dbt as a peer in benchmarks: a dbt project written from a synthetic schema, and dbt's CLI.

dbt is never a dependency of mvgraph: ``--dbt PATH`` names a virtual environment (or its
``bin/dbt``) where ``dbt-core==1.10.*`` and ``dbt-postgres==1.9.*`` are installed, e.g.::

    python3 -m venv /tmp/dbt-venv
    /tmp/dbt-venv/bin/pip install 'dbt-core==1.10.*' 'dbt-postgres==1.9.*'

dbt runs with its anonymous usage statistics and version check off, and with HTTPS and HTTP
proxies pointing at a closed local port: ``dbt --version`` asks PyPI for the latest release
(``requests.get(..., timeout=1)``) whatever ``DBT_VERSION_CHECK`` says, so it fails at once
instead, and no run makes a network call or depends on the network's speed.

Each model is a file ``models/vN.sql``: ``{{ config(materialized='materialized_view') }}``
and the same SELECT the synthetic schema gives the view, its inputs written ``{{ ref('vK') }}``
(views) or ``{{ source('base', 'tJ') }}`` (tables, declared in ``models/sources.yml``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fixtures.synthetic import SyntheticSchema, _view_query

DBT_ENV = {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DBT_VERSION_CHECK": "false",
    "HTTPS_PROXY": "http://127.0.0.1:9",  # discard port: nothing listens, refused at once
    "HTTP_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


def dbt_executable(path: str) -> str:
    """``bin/dbt`` of a virtual environment, or the path itself when it is the executable.

    Raises:
        SystemExit: no dbt there (the benchmark names the path and stops).
    """
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / "bin" / "dbt"
    if not candidate.is_file() or not os.access(candidate, os.X_OK):
        raise SystemExit(f"--dbt {path}: no dbt executable there; install dbt-core==1.10.* "
                         "and dbt-postgres==1.9.* into a virtual environment and name it")
    return str(candidate)


def dbt_env() -> dict[str, str]:
    """The environment dbt runs in (no telemetry, no version check, no network)."""
    return {**os.environ, **DBT_ENV}


def dbt_version(dbt: str) -> str:
    """dbt-core's installed version, as ``dbt --version`` prints it."""
    out = subprocess.run([dbt, "--version"], capture_output=True, text=True, env=dbt_env(),
                         check=True).stdout
    line = next((x for x in out.splitlines() if "installed:" in x), "installed: ?")
    return line.split("installed:", 1)[1].strip()


def _short(name: str) -> str:
    return name.rsplit(".", 1)[1]


def write_dbt_project(schema: SyntheticSchema, directory: Path) -> Path:
    """A dbt project with one model per view of ``schema`` (materialized views) and the base
    tables as sources; returns its directory (``profiles.yml`` included, never connected to:
    ``dbt parse`` does not open a connection)."""
    if schema.schema != "public":
        raise ValueError("the dbt project is written for the public schema only")
    models = directory / "models"
    models.mkdir(parents=True, exist_ok=True)
    (directory / "dbt_project.yml").write_text(
        "name: bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\n"
        "model-paths: ['models']\n", encoding="utf-8")
    (directory / "profiles.yml").write_text(
        "bench:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n"
        "      host: localhost\n      port: 5432\n      user: bench\n      password: bench\n"
        "      dbname: bench\n      schema: public\n      threads: 2\n", encoding="utf-8")
    tables = {_short(t) for t in schema.tables}
    (models / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: base\n    schema: public\n    tables:\n"
        + "".join(f"      - name: {t}\n" for t in sorted(tables)), encoding="utf-8")

    def ref(name: str) -> str:
        short = _short(name)
        return (f"{{{{ source('base', '{short}') }}}}" if short in tables
                else f"{{{{ ref('{short}') }}}}")

    for i, (name, reads) in enumerate(schema.views):
        (models / f"{_short(name)}.sql").write_text(
            "{{ config(materialized='materialized_view') }}\n"
            + _view_query(i, [ref(r) for r in reads]) + "\n", encoding="utf-8")
    return directory


def dbt_parse_command(dbt: str, project: Path) -> list[str]:
    """``dbt parse --no-partial-parse`` of ``project`` (run with ``cwd=project``)."""
    return [dbt, "parse", "--no-partial-parse", "--project-dir", str(project),
            "--profiles-dir", str(project)]
