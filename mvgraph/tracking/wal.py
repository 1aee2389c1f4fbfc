"""Tracking mode ``wal``: writes read from the write-ahead log, no trigger on the writers' path.

One logical replication slot per database (``mvgraph_<database oid>``: slot names are
cluster-wide), plugin ``pgoutput``, with two publications of this database: ``mvgraph_wal``
(insert, update, delete, truncate) for tables with a replica identity and ``mvgraph_wal_insert``
(insert, truncate) for tables without one, whose UPDATE and DELETE would otherwise fail; those
keep a statement trigger for UPDATE and DELETE only. :func:`catch_up` decodes the slot into
``mvgraph.write_log`` as (table, xid8) rows, the rows the tracking trigger writes; under load it
first logs a running-transactions record, so that the slot's restart point, from which every
read decodes again, trails by about one read instead of up to 30 s of WAL.

The slot exists exactly while some table is in ``wal`` mode: :func:`prepare` makes it (and the
publications) before the first table switches, :func:`drop_if_unused` removes them once the last
one left, after reading what the slot still held.

Only objects mvgraph made are used (issue 17): each publication is recorded (oid, owner) in the
transaction that creates it, the slot when it is made (``mvgraph.wal_object``), and before any
use :func:`verify` checks them (``mvgraph.wal_problems``): a publication of that name made by
someone else, dropped and made again, altered (what it publishes, a row filter, a column list,
schemas, publish_via_partition_root, FOR ALL TABLES, a table added or missing), or a slot
mvgraph did not make, fails with one line naming it and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.errors import TrackingError, UsageError, translated

log = logging.getLogger("mvgraph")
Conn = psycopg.Connection[tuple[object, ...]]

PUB_FULL = "mvgraph_wal"
PUB_INSERT = "mvgraph_wal_insert"
PUBLICATIONS = (PUB_FULL, PUB_INSERT)
DEFAULT_MAX_LAG = "1GB"  # the wal_slot_max_lag setting's default
_PUBLISH = {PUB_FULL: "insert, update, delete, truncate", PUB_INSERT: "insert, truncate"}


def slot_name(conn: Conn) -> str:
    """This database's slot: ``mvgraph_<database oid>``."""
    return f"mvgraph_{_level_and_oid(conn)[1]}"


def _level_and_oid(conn: Conn) -> tuple[str, int]:
    with translated():
        row = conn.execute(query("wal_level")).fetchone()
    assert row is not None
    return str(row[0]), int(str(row[1]))


def require_logical(conn: Conn) -> None:
    """Raises UsageError (exit 2) naming the setting and the fix when wal_level is not logical."""
    level, _ = _level_and_oid(conn)
    if level != "logical":
        raise UsageError(f"mode wal needs wal_level = logical (it is {level}); run ALTER SYSTEM "
                         "SET wal_level = logical and restart the server, or use --mode triggers")


def problems(conn: Conn, *, existing_only: bool = False) -> list[str]:
    """What is wrong with the publications and the slot, one line each (``existing_only``:
    objects not made yet are not a problem)."""
    with translated():
        return [str(r[0]) for r in conn.execute(query("wal_problems"), {
            "slot": slot_name(conn), "pubs": list(PUBLICATIONS),
            "publishes": [_PUBLISH[p] for p in PUBLICATIONS], "existing_only": existing_only})]


def verify(conn: Conn, *, existing_only: bool = False, tables: bool = True) -> None:
    """Raises TrackingError (one line: the object and the fix) unless every publication and
    the slot is as mvgraph made it (``tables``: and the publications hold exactly the wal-mode
    tables; `track` itself, which repairs that, passes False)."""
    found = [p for p in problems(conn, existing_only=existing_only)
             if tables or not _about_tables(p)]
    if not found:
        return
    first = found[0]
    if "not created by mvgraph" in first or "made again" in first:
        obj = first.split(" was ")[0]
        fix = (f"have its owner or a superuser drop it ({_drop_statement(obj)}), then run "
               "`mvgraph track --mode wal` on the tables again")
    elif first.startswith("table "):
        fix = f"run `mvgraph track {first.split()[1]} --mode wal`"
    elif " holds " in first:
        fix = f"run `mvgraph untrack {first.split(' holds ')[1].split(',')[0]}`"
    else:
        fix = ("run `mvgraph untrack` on every wal-mode table (the publications and the slot go "
               "with the last one), then `mvgraph track --mode wal` again")
    more = f" (and {len(found) - 1} more problem{'s' if len(found) > 2 else ''})" \
        if len(found) > 1 else ""
    raise TrackingError(f"wal-mode tracking cannot be trusted: {first}{more}; {fix}")


def _about_tables(problem: str) -> bool:
    return problem.startswith("table ") or " holds " in problem


def _drop_statement(obj: str) -> str:
    kind, _, name = obj.partition(" ")
    if kind == "publication":
        return f"DROP PUBLICATION {name}"
    return f"SELECT pg_drop_replication_slot('{name.split()[-1]}')"


@contextmanager
def held(conn: Conn) -> Iterator[None]:
    """The slot's advisory lock, at session level (re-entrant): one consumer at a time, and
    no slot dropped while a table is switching to wal mode. ``conn`` must be idle."""
    with translated():
        conn.execute(query("wal_lock"))
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status == \
                psycopg.pq.TransactionStatus.IDLE:
            with translated():
                conn.execute(query("wal_unlock"))


def slot_exists(conn: Conn) -> bool:
    """True when this database has its mvgraph slot."""
    with translated():
        return conn.execute(query("wal_slot"), {"slot": slot_name(conn)}).fetchone() is not None


def prepare(conn: Conn) -> None:
    """Make the publications, then the slot (in that order: the slot decodes with publications
    that existed when it started). Idempotent; ``conn`` must be idle (not in a transaction).
    Creating the slot waits for the transactions running at that moment to end."""
    require_logical(conn)
    verify(conn, existing_only=True, tables=False)  # a publication or slot that is not ours
    with translated():
        have = {str(r[0]) for r in conn.execute(query("wal_publications"),
                                                {"pubs": list(PUBLICATIONS)})}
        for pub in PUBLICATIONS:
            if pub not in have:
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("CREATE PUBLICATION {} WITH (publish = {})").format(
                            sql.Identifier(pub), sql.Literal(_PUBLISH[pub])))
                        conn.execute(query("wal_record_publication"),
                                     {"pub": pub, "publish": _PUBLISH[pub]})
                except pgerrors.DuplicateObject:
                    pass  # made by a concurrent `track`
        if not slot_exists(conn):
            try:
                conn.execute(query("wal_create_slot"), {"slot": slot_name(conn)})
                log.info("created replication slot %s", slot_name(conn))
            except pgerrors.DuplicateObject:
                pass
            else:
                with conn.transaction():
                    conn.execute(query("wal_record_slot"), {"slot": slot_name(conn)})
    verify(conn, existing_only=True, tables=False)  # what a concurrent `track` made is ours


def publish(conn: Conn, oid: int, schema: str, name: str) -> bool:
    """Put a table in the publication that fits it (inside the caller's transaction); returns
    False when it has no replica identity (only inserts and truncates are published: the
    caller keeps an UPDATE/DELETE trigger)."""
    with translated():
        row = conn.execute(query("wal_replica_identity"), {"oid": oid}).fetchone()
        full = bool(row and row[0])
        want = PUB_FULL if full else PUB_INSERT
        for rel_schema, rel_name, pub in conn.execute(query("wal_membership"), {
                "oid": oid, "pubs": list(PUBLICATIONS)}).fetchall():
            # the table and each inheritance child below it, one by one (ONLY): a child made
            # since the table was published is added by tracking the table again
            table = sql.Identifier(str(rel_schema), str(rel_name))
            if pub is not None and pub != want:
                conn.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE ONLY {}").format(
                    sql.Identifier(str(pub)), table))
            if pub != want:
                conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}").format(
                    sql.Identifier(want), table))
    return full


def unpublish(conn: Conn, oid: int, schema: str, name: str) -> None:
    """Take a table out of mvgraph's publications (inside the caller's transaction)."""
    with translated():
        for rel_schema, rel_name, pub in conn.execute(query("wal_membership"), {
                "oid": oid, "pubs": list(PUBLICATIONS)}).fetchall():
            if pub is not None:
                conn.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE ONLY {}").format(
                    sql.Identifier(str(pub)), sql.Identifier(str(rel_schema), str(rel_name))))


def catch_up(conn: Conn, *, verified: bool = True) -> int:
    """Decode the slot up to the WAL inserted so far into the change log; returns the rows
    added (0 when there is no slot). Every transaction committed before the call is then in
    the log. One consumer at a time (an advisory lock: a second one waits, then finds little).
    ``conn`` must be idle.

    Raises:
        TrackingError: the publications or the slot are not as mvgraph made them
            (``verified=False``: not checked, for reading what the slot holds before
            dropping it).
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return 0  # inside a caller's transaction: the caller caught up before it began
    slot = slot_name(conn)
    if not slot_exists(conn):
        if verified:
            verify(conn, existing_only=True)
        return 0
    if verified:
        verify(conn)
    with held(conn), translated():
        try:
            return _consume(conn, slot)
        except pgerrors.ObjectNotInPrerequisiteState:
            if not _slot_lost(conn, slot):
                raise
            _renew(conn, slot)
            return 0


def _slot_lost(conn: Conn, slot: str) -> bool:
    row = conn.execute(query("wal_slot_status"), {"slot": slot}).fetchone()
    return row is not None and str(row[0]) == "lost"


def _renew(conn: Conn, slot: str) -> None:
    """The server invalidated the slot (it kept more WAL than max_slot_wal_keep_size): the
    writes it held are gone, so a new slot starts and every wal-mode table counts as newly
    tracked (its readers are refreshed once)."""
    log.warning("replication slot %s was invalidated by the server (max_slot_wal_keep_size): "
                "it is made again and the views reading wal-mode tables are refreshed once", slot)
    conn.execute(query("wal_drop_slot"), {"slot": slot})
    conn.execute(query("wal_create_slot"), {"slot": slot})
    oids = [int(str(r[0])) for r in conn.execute(query("wal_tables"))]
    with conn.transaction():
        conn.execute(query("wal_record_slot"), {"slot": slot})
        conn.execute(query("log_tracking_start"), {"oids": oids})


def _consume(conn: Conn, slot: str) -> int:
    due = conn.execute(query("wal_snapshot_due"), {"slot": slot}).fetchone()
    if due is not None and due[0] is True:  # keeps the slot's restart point close
        conn.execute(query("wal_log_snapshot"))
    row = conn.execute(query("wal_target"), {"slot": slot}).fetchone()
    assert row is not None
    upto, flushed, read = str(row[0]), bool(row[1]), row[2] is True
    if read:  # every commit record is below what the slot confirmed: nothing to decode
        return 0
    if not flushed:  # an asynchronous commit may be visible and not yet flushed
        with conn.transaction():
            conn.execute(query("wal_flush"))
    if not slot_exists(conn):  # dropped meanwhile (the last table left wal mode)
        return 0
    with conn.transaction():
        added = conn.execute(query("wal_consume"), {
            "slot": slot, "upto": upto, "pubs": ",".join(PUBLICATIONS)}).rowcount
    conn.execute(query("wal_advance"), {"slot": slot, "upto": upto})
    return max(added, 0)


def tick(conn: Conn) -> None:
    """The daemon's tick: keep the slot read, so catching up before a plan is short."""
    catch_up(conn)


def drop_if_unused(conn: Conn) -> bool:
    """Drop the slot and the publications when no table is in wal mode any more, after reading
    what the slot still holds (writes made before the switch). True when something went."""
    with held(conn), translated():
        if conn.execute(query("wal_tables")).fetchone() is not None:
            return False
        # only what mvgraph made: a publication or slot of that name made by another role stays
        have = [str(r[0]) for r in conn.execute(query("wal_recorded_publications"))]
        slot = slot_name(conn)
        exists = slot_exists(conn) and not any(
            p.startswith(f"replication slot {slot} ") for p in problems(conn))
        if exists:
            catch_up(conn, verified=False)  # writes made before the last table left wal mode
            conn.execute(query("wal_drop_slot"), {"slot": slot})
            log.info("dropped replication slot %s: no table is in wal mode", slot)
        with conn.transaction():
            for pub in have:
                conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
                    sql.Identifier(pub)))
            conn.execute(query("wal_forget"))
    return exists or bool(have)


def slot_lag(conn: Conn) -> int | None:
    """Bytes of WAL the slot keeps (from its restart point to now); None without a slot."""
    with translated():
        row = conn.execute(query("wal_slot"), {"slot": slot_name(conn)}).fetchone()
    return int(str(row[2])) if row is not None and row[2] is not None else None


def max_lag_bytes(conn: Conn, setting: str) -> int:
    """The ``wal_slot_max_lag`` setting (a size such as 1GB or 500MB) in bytes."""
    with translated():
        row = conn.execute(query("size_bytes"), {"size": setting}).fetchone()
    return int(str(row[0])) if row else 0


def lag_warning(conn: Conn, setting: str = DEFAULT_MAX_LAG) -> str | None:
    """A one-line warning when the slot keeps more WAL than ``setting``, else None."""
    lag = slot_lag(conn)
    if lag is None or lag <= max_lag_bytes(conn, setting):
        return None
    return (f"replication slot {slot_name(conn)} keeps {lag // (1024 * 1024)} MB of WAL (more "
            f"than wal_slot_max_lag = {setting}): run `mvgraph daemon`, or any refresh or status, "
            "to read it; or `mvgraph untrack --all` to drop it; see max_slot_wal_keep_size")
