"""Candidate bodies for the change-tracking trigger, side by side: pgbench TPS with each vs none.

Each variant is a statement-level ``BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE`` trigger
(``ENABLE ALWAYS``, as mvgraph installs it) on the four pgbench tables, logging into its own
unlogged table in a ``bench`` schema (mvgraph is not involved):

* ``upsert_definer``: today's body: ``INSERT ... ON CONFLICT DO NOTHING`` into a table whose
  primary key is (relid, xid), ``SECURITY DEFINER``;
* ``upsert``: the same without ``SECURITY DEFINER``;
* ``plain_definer`` / ``plain``: a plain ``INSERT`` into an index-less table (one row per
  statement; readers and compaction deduplicate), with and without ``SECURITY DEFINER``
  (``plain_definer`` is the body migration 0011 installs);
* ``guc_plain``: ``plain`` plus a transaction-local setting per table (``set_config(..., true)``)
  holding the transaction id, meaning "already logged in this transaction": later statements
  insert nothing;
* ``guc_plain_definer``: the same, ``SECURITY DEFINER``;
* ``per_xact``: one row per transaction carrying all tables written (``oid[]``), upserted;
* ``current``: the body installed by migrations 0011 and 0015 (``plain_definer`` with the
  search path pinned): one row per statement, written or not;
* ``written``: the body of migration 0017 (issue 17): an ``AFTER`` statement trigger that logs
  nothing while the transaction has no transaction id (it has written no row) and the table
  has storage (TRUNCATE, partitioned and foreign tables log always); search path pinned,
  ``SECURITY DEFINER``;
* ``counts``: a rejected candidate: ``AFTER``, logging only when the table's
  transaction-local pg_stat counters are not 0 (since PostgreSQL 15 they include earlier
  transactions' counts not yet flushed, so an empty statement soon after a write still logs);
* ``transition``: the other candidate: four ``AFTER`` statement triggers (one event each, as
  PostgreSQL requires of transition tables) logging when the transition table has a row
  (TRUNCATE: always);
* ``written_one``: ``written`` as one statement (``INSERT ... SELECT ... WHERE`` the statement
  wrote something), no ``IF``;
* ``noop``, ``noop_pinned`` and ``guc_only``: not candidates (they log nothing): the cost of a
  plpgsql trigger call that does nothing (``noop_pinned``: ``SECURITY DEFINER`` with the pinned
  search path and ``AFTER``, the call as mvgraph installs it), and of one that only checks and
  sets the flag.

Every round runs none and the variants in one order then in the reverse order (ABBA), at 1, 4
and 8 clients, ``VACUUM`` of the pgbench tables and every log emptied before each run, fsync
on, ``pgbench -i -s 10``. The ratio of a variant is its TPS over the mean TPS of the two
untracked runs of the same round and client count; the table shows the median and range of
the per-round ratios. Run: ``python benchmarks/trigger_variants.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from collections.abc import Sequence

import psycopg
from _common import Result, database, pg_bin, print_table, progress, server, server_note, spread

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)

SETUP = """
CREATE SCHEMA bench;
CREATE UNLOGGED TABLE bench.log_pk (relid oid NOT NULL, xid xid8 NOT NULL,
    kind "char" NOT NULL DEFAULT 'w', at timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (relid, xid));
CREATE UNLOGGED TABLE bench.log_plain (relid oid NOT NULL, xid xid8 NOT NULL,
    kind "char" NOT NULL DEFAULT 'w', at timestamptz NOT NULL DEFAULT statement_timestamp());
CREATE UNLOGGED TABLE bench.log_xact (xid xid8 PRIMARY KEY, relids oid[] NOT NULL,
    at timestamptz NOT NULL DEFAULT statement_timestamp());
"""

_UPSERT = """
BEGIN
    INSERT INTO bench.log_pk (relid, xid) VALUES (TG_RELID, pg_catalog.pg_current_xact_id())
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END"""
_PLAIN = """
BEGIN
    INSERT INTO bench.log_plain (relid, xid) VALUES (TG_RELID, pg_catalog.pg_current_xact_id());
    RETURN NULL;
END"""
_GUC = """
DECLARE
    flag text := 'mvgraph_w.r' OPERATOR(pg_catalog.||) TG_RELID::text;
    x    pg_catalog.xid8 := pg_catalog.pg_current_xact_id();
    xact text := x::text;
BEGIN
    IF NOT coalesce(pg_catalog.current_setting(flag, true) OPERATOR(pg_catalog.=) xact, false)
    THEN
        INSERT INTO bench.log_plain (relid, xid) VALUES (TG_RELID, x);
        PERFORM pg_catalog.set_config(flag, xact, true);
    END IF;
    RETURN NULL;
END"""
_PER_XACT = """
BEGIN
    INSERT INTO bench.log_xact AS l (xid, relids)
    VALUES (pg_catalog.pg_current_xact_id(), ARRAY[TG_RELID])
    ON CONFLICT (xid) DO UPDATE SET relids = l.relids || TG_RELID
     WHERE NOT TG_RELID = ANY (l.relids);
    RETURN NULL;
END"""

_COUNTS = """
BEGIN
    IF TG_OP <> 'TRUNCATE'
       AND pg_stat_get_xact_tuples_inserted(TG_RELID) + pg_stat_get_xact_tuples_updated(TG_RELID)
           + pg_stat_get_xact_tuples_deleted(TG_RELID) = 0
       AND current_setting('track_counts')::boolean THEN  -- a simple expression: no subquery
        IF EXISTS (SELECT FROM pg_class c WHERE c.oid = TG_RELID AND c.relkind = 'r'
                                              AND NOT c.relhassubclass) THEN
            RETURN NULL;  -- no row counted on the table in this transaction
        END IF;
    END IF;
    INSERT INTO bench.log_plain (relid, xid) VALUES (TG_RELID, pg_current_xact_id());
    RETURN NULL;
END"""
_WRITTEN = """
BEGIN
    IF TG_OP <> 'TRUNCATE' AND pg_current_xact_id_if_assigned() IS NULL
       AND pg_relation_filenode(TG_RELID) IS NOT NULL THEN
        RETURN NULL;  -- the transaction has written no row yet
    END IF;
    INSERT INTO bench.log_plain (relid, xid) VALUES (TG_RELID, pg_current_xact_id());
    RETURN NULL;
END"""
_WRITTEN_ONE = """
BEGIN
    INSERT INTO bench.log_plain (relid, xid)
    SELECT TG_RELID, pg_current_xact_id()
     WHERE pg_current_xact_id_if_assigned() IS NOT NULL OR TG_OP = 'TRUNCATE'
        OR pg_relation_filenode(TG_RELID) IS NULL;
    RETURN NULL;
END"""
_TRANSITION = """
BEGIN
    IF TG_OP = 'TRUNCATE' OR EXISTS (SELECT FROM n) THEN
        INSERT INTO bench.log_plain (relid, xid) VALUES (TG_RELID, pg_current_xact_id());
    END IF;
    RETURN NULL;
END"""
_TRUNCATE_ONLY = """
BEGIN
    INSERT INTO bench.log_plain (relid, xid) VALUES (TG_RELID, pg_current_xact_id());
    RETURN NULL;
END"""

_NOOP = """
BEGIN
    RETURN NULL;
END"""
_GUC_ONLY = """
DECLARE
    flag text := 'mvgraph_w.r' OPERATOR(pg_catalog.||) TG_RELID::text;
    xact text := pg_catalog.pg_current_xact_id()::text;
BEGIN
    IF NOT coalesce(pg_catalog.current_setting(flag, true) OPERATOR(pg_catalog.=) xact, false)
    THEN
        PERFORM pg_catalog.set_config(flag, xact, true);
    END IF;
    RETURN NULL;
END"""

#: variant -> (trigger body, SECURITY DEFINER)
VARIANTS: dict[str, tuple[str, bool]] = {
    "upsert_definer": (_UPSERT, True),
    "upsert": (_UPSERT, False),
    "plain_definer": (_PLAIN, True),
    "plain": (_PLAIN, False),
    "guc_plain": (_GUC, False),
    "guc_plain_definer": (_GUC, True),
    "per_xact": (_PER_XACT, False),
    "current": (_PLAIN, True),  # with the pinned search path (PINNED)
    "written": (_WRITTEN, True),
    "written_one": (_WRITTEN_ONE, True),
    "counts": (_COUNTS, True),
    "transition": (_TRANSITION, True),
    "noop": (_NOOP, False),  # the floor: a plpgsql call that logs nothing
    "noop_pinned": (_NOOP, True),  # the floor of mvgraph's call (definer, pinned, AFTER)
    "guc_only": (_GUC_ONLY, False),  # the flag's part of guc_plain, without the insert
}


#: variants whose function pins search_path = pg_catalog, pg_temp (as 0015 does)
PINNED = frozenset({"current", "written", "written_one", "counts", "transition", "noop_pinned"})
#: variants not installed as one BEFORE statement trigger for all four events: their triggers
#: as (timing and events, REFERENCING clause, function)
TRIGGERS: dict[str, list[tuple[str, str, str]]] = {
    "written": [("AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", "", "written")],
    "written_one": [("AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", "", "written_one")],
    "noop_pinned": [("AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", "", "noop_pinned")],
    "counts": [("AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", "", "counts")],
    "transition": [("AFTER INSERT", "REFERENCING NEW TABLE AS n", "transition"),
                   ("AFTER UPDATE", "REFERENCING NEW TABLE AS n", "transition"),
                   ("AFTER DELETE", "REFERENCING OLD TABLE AS n", "transition"),
                   ("AFTER TRUNCATE", "", "truncate_only")],
}


def install_functions(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The log tables and one trigger function per variant."""
    conn.execute(SETUP)
    for name, (body, definer) in [*VARIANTS.items(), ("truncate_only", (_TRUNCATE_ONLY, True))]:
        pinned = name in PINNED or name == "truncate_only"
        conn.execute(f"CREATE FUNCTION bench.{name}() RETURNS trigger LANGUAGE plpgsql"
                     f"{' SECURITY DEFINER' if definer else ''}"
                     f"{' SET search_path = pg_catalog, pg_temp' if pinned else ''} AS $${body}$$")


def use(conn: psycopg.Connection[tuple[object, ...]], variant: str | None) -> None:
    """Put this variant's trigger (or none) on the pgbench tables; empty the logs; VACUUM."""
    for table in TABLES:
        for i in range(4):
            conn.execute(f"DROP TRIGGER IF EXISTS bench_track{i or ''} ON {table}")
        if variant is None:
            continue
        triggers = TRIGGERS.get(variant, [("BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE", "",
                                           variant)])
        for i, (events, referencing, function) in enumerate(triggers):
            name = f"bench_track{i or ''}"
            conn.execute(f"CREATE TRIGGER {name} {events} ON {table} {referencing} "
                         f"FOR EACH STATEMENT EXECUTE FUNCTION bench.{function}()")
            conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
    conn.execute("TRUNCATE bench.log_pk, bench.log_plain, bench.log_xact")
    conn.execute("VACUUM " + ", ".join(TABLES))
    conn.execute("CHECKPOINT")


def tps(dsn: str, options: Sequence[str], sync_commit: str = "on") -> float:
    """TPS of one TPC-B-like run (``sync_commit``: the clients' synchronous_commit)."""
    env = {**os.environ, "PGOPTIONS": f"-c synchronous_commit={sync_commit}"}
    proc = subprocess.run([pg_bin("pgbench"), *options, dsn], capture_output=True, text=True,
                          env=env)
    m = _TPS.search(proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"pgbench failed:\n{proc.stdout}\n{proc.stderr}")
    return float(m.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--synchronous-commit", default="on", choices=("on", "off"),
                        help="off: no WAL flush wait, so the trigger's CPU cost shows")
    args = parser.parse_args()
    chosen = [v for v in args.variants.split(",") if v]
    scale, seconds, rounds = (1, 2, 1) if args.quick else (10, args.seconds, args.rounds)
    clients_list = tuple(int(c) for c in args.clients.split(","))
    sync = args.synchronous_commit
    ratios: dict[tuple[str, int], list[float]] = {(v, c): [] for v in chosen for c in clients_list}
    base: dict[int, list[float]] = {c: [] for c in clients_list}
    with server() as srv, database(srv, "variants") as dsn:
        settings = server_note(srv)
        subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", str(scale), dsn], check=True,
                       capture_output=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            install_functions(conn)
            tps(dsn, ["-c", "8", "-j", "2", "-T", str(seconds)])  # warm-up
            for rnd in range(rounds):
                for clients in clients_list:
                    opts = ["-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds)]
                    order: list[str | None] = [None, *chosen]
                    if rnd % 2:
                        order.reverse()
                    measured: dict[str | None, list[float]] = {}
                    for variant in [*order, *reversed(order)]:
                        use(conn, variant)
                        started = time.monotonic()
                        value = tps(dsn, opts, sync)
                        measured.setdefault(variant, []).append(value)
                        progress(f"round {rnd + 1}, {clients} client(s), {variant or 'none'}: "
                                 f"{value:.1f} tps ({time.monotonic() - started:.0f} s)")
                    none = sum(measured[None]) / 2
                    base[clients].append(none)
                    for v in chosen:
                        ratios[(v, clients)].append(sum(measured[v]) / 2 / none)
            use(conn, None)
    rows = [Result(f"{c} client(s): none, TPS", spread(base[c])) for c in clients_list]
    rows += [Result(f"{c} client(s): {v} / none", spread(ratios[(v, c)]))
             for v in chosen for c in clients_list]
    print_table("trigger_variants: pgbench TPS ratio of each trigger body to no trigger", rows,
                [f"{rounds} round(s), each ABBA over none and the variants, {seconds} s runs, "
                 f"pgbench -i -s {scale}, synchronous_commit={sync}; per-round ratios: "
                 + "; ".join(f"{v}@{c}: " + ", ".join(f"{r:.3f}" for r in ratios[(v, c)])
                             for v in chosen for c in clients_list), settings])


if __name__ == "__main__":
    main()
