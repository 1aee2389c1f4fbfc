"""``mvgraph daemon``: fires schedules, and (optionally) runs their jobs.

The ``mvgraph.schedule`` table is the only source of truth. An APScheduler 3
``BackgroundScheduler`` with a job store private to this process holds one job per clock
schedule, with a :class:`~mvgraph.scheduler.timing.SlotTrigger`; it is rebuilt from the table
at start, kept current by LISTEN on ``mvgraph_schedules`` (a dedicated connection; within a
second) and by a full resync every ``resync_s`` (30 s). APScheduler only says *when*; what a
slot does is decided here, in PostgreSQL:

* **exactly once**: a firing first claims its slot (the unique ``(schedule_id, slot)`` key of
  ``mvgraph.schedule_slot``) in the transaction that submits its job, so any number of daemons,
  on any number of machines, run each due slot once;
* **a firing only submits a job** (``mvgraph.submit_for_schedules``: the schedule's ``what``,
  owned by the schedule's owner); the daemon's workers, or any ``mvgraph worker``, run it logged
  in as the login that created the schedule;
* **overlap**: a slot due while a run of the same schedule is unfinished is recorded
  ``skipped``; with ``overlap = queue`` one slot waits (``fired`` without a job) and its job is
  submitted when the run ends;
* **downtime**: at start (and after the database came back) the slots missed since the last one
  recorded are coalesced: the latest runs if it fell due within ``misfire_grace_s``, the others
  are recorded ``missed``;
* **run ends**: each ended job of a slot is written to its schedule once (``last_end``,
  ``last_status``, ``last_error``, the failure count); the ``schedule_max_failures``-th failure
  in a row (default 16) marks the schedule broken until ``mvgraph schedule resume``.

A heartbeat row in ``mvgraph.daemon`` says the daemon is alive (``mvgraph daemon status``);
:attr:`Daemon.health` remembers when the last one reached the database (``/healthz``).
SIGTERM / SIGINT stop the firing at once and give running jobs ``shutdown_s``; the database going
away never stops the daemon (it reconnects with backoff, then resyncs and catches up).

Hooks: :meth:`Daemon.add_tick` runs a callable every so many seconds with a connection (target
lag planning, metrics, alerts); :meth:`Daemon.add_listener` receives every
:data:`DaemonEvent`; :meth:`Daemon.add_stop_hook` runs a callable when the daemon has stopped.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import psycopg
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from mvgraph.db import outage
from mvgraph.db.connect import connect
from mvgraph.db.listen import wait_notifies
from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, UsageError, translated
from mvgraph.jobs import store as jobs
from mvgraph.model.status import JobKind, ScheduleKind, SlotStatus
from mvgraph.refresh.graphcache import GraphCache
from mvgraph.retrylog import Outage
from mvgraph.scheduler import store
from mvgraph.scheduler.health import DEFAULT_MAX_AGE_S, Health
from mvgraph.scheduler.store import Schedule
from mvgraph.scheduler.timing import SlotTrigger, catch_up, slots_between
from mvgraph.scheduler.webhook import check_url
from mvgraph.version import __version__

log = logging.getLogger("mvgraph.daemon")
Conn = psycopg.Connection[tuple[object, ...]]
MAX_BACKOFF_S = 30.0
MISSED_ROWS = 100  # missed slots recorded one by one per catch-up; more are only counted
# the in-process worker's mvgraph.worker row is renewed this often (its leases every 2 s); the
# daemon's own heartbeat says every 2 s that both are alive
IN_PROCESS_WORKER_ROW_S = 10.0
IDLE_AFTER_S = 30.0  # no job NOTIFY heard for this long: ended runs are looked for less often
FIRE_BATCHES = 2  # firing batches in flight at once (each on a pooled connection)
QUIET_ARMING = 100  # a resync arming more schedules logs one line, not one per schedule
JOB_OPTIONS: dict[str, Any] = {"search_path": ["public"]}  # a schedule's job: names qualified


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How a daemon runs; the defaults are the documented ones."""

    dsn: str | None = field(default=None, repr=False)  # a password must not reach a repr
    workers: int = 1  # jobs run at once by the in-process worker (0: scheduler only)
    resync_s: float = 30.0  # full reload of the table (LISTEN/NOTIFY does it within 1 s)
    misfire_grace_s: float = 60.0  # a missed slot still runs if no older than this
    heartbeat_s: float = 2.0
    check_s: float = 1.0  # look for ended runs (a job's end also NOTIFYs)
    idle_check_s: float = 5.0  # the same look once no job was heard of for IDLE_AFTER_S
    shutdown_s: float = 30.0  # SIGTERM: running jobs may finish for this long
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    alert_webhook: str | None = field(default=None, repr=False)  # the URL may hold a token
    alert_heartbeat_s: float = 60.0  # a daemon or worker silent this long is alerted
    alert_check_s: float = 2.0  # how often the tables are looked at for alerts

    def check(self) -> None:
        """Refuse settings that cannot work (exit 2)."""
        if self.workers < 0:
            raise UsageError("--workers must be 0 (scheduler only) or more")
        if self.misfire_grace_s < 0:
            raise UsageError("--misfire-grace must be 0 or more seconds")
        if self.resync_s <= 0 or self.heartbeat_s <= 0 or self.check_s <= 0:
            raise UsageError("--resync must be positive")
        if self.alert_heartbeat_s <= 0 or self.alert_check_s <= 0:
            raise UsageError("--alert-heartbeat-s must be positive")
        if self.alert_webhook is not None:
            check_url(self.alert_webhook)


# ---- events (for logs, metrics and tests) ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Fired:
    """A slot was claimed and its job submitted; ``lateness_s`` = job submitted − slot."""

    schedule_id: int
    name: str
    slot: datetime
    job_id: int
    lateness_s: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A slot was recorded skipped (overlap, owner), missed (downtime) or queued (waits)."""

    schedule_id: int
    name: str
    slot: datetime
    status: SlotStatus
    reason: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A schedule's job ended; ``broken`` when this failure made the schedule broken."""

    schedule_id: int
    name: str
    job_id: int
    status: str
    failure_count: int
    broken: bool
    error: str | None


DaemonEvent = Fired | Skipped | RunEnded
Tick = Callable[[Conn], float | None]  # may return the seconds until it is due again


@dataclass
class _TickEntry:
    fn: Tick
    every_s: float
    name: str
    idle_s: float | None = None  # period while no job activity was heard (None: every_s)
    due: float = 0.0  # seconds since the tick loop started
    ran: float = 0.0  # when it last started


class _FireExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """Runs firings with the slot times APScheduler computed (its own executors drop them).

    The slots due at one instant are fired together: a dispatcher thread hands every firing
    queued so far to ``fire`` as one batch (one statement), with at most ``batches`` batches in
    flight; a burst queues up behind the first batch and goes in the next one."""

    def __init__(self, fire: Callable[[list[tuple[int, list[datetime]]]], None],
                 batches: int = 2) -> None:
        super().__init__()
        self._fire = fire
        self._queue: queue.SimpleQueue[tuple[str, list[datetime]] | None] = queue.SimpleQueue()
        self._free = threading.Semaphore(batches)
        self._pool = ThreadPoolExecutor(batches, thread_name_prefix="fire")
        self._dispatcher: threading.Thread | None = None

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._dispatcher = threading.Thread(target=self._dispatch, name="fire-dispatch",
                                            daemon=True)
        self._dispatcher.start()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self._queue.put((str(job.id), list(run_times)))

    def _dispatch(self) -> None:
        while (first := self._queue.get()) is not None:
            self._free.acquire()
            batch, stop = [first], False
            with suppress(queue.Empty):
                while (more := self._queue.get_nowait()) is not None:
                    batch.append(more)
                stop = True  # None: shut down after this batch
            self._pool.submit(self._run, batch)
            if stop:
                return

    def _run(self, batch: list[tuple[str, list[datetime]]]) -> None:
        try:
            self._fire([(int(job_id), times) for job_id, times in batch])
        except Exception:  # a bug: logged, the daemon goes on
            log.exception("schedules %s: firing failed", ", ".join(j for j, _ in batch))
        finally:
            self._free.release()
            for job_id, _ in batch:
                self._run_job_success(job_id, [])

    def shutdown(self, wait: bool = True) -> None:
        self._queue.put(None)
        if wait and self._dispatcher is not None:
            self._dispatcher.join()
        self._pool.shutdown(wait)


class _Pool:
    """A few autocommit connections for firing threads and ticks; broken ones are dropped."""

    def __init__(self, dsn: str | None, name: str) -> None:
        self._dsn = dsn
        self._name = name
        self._free: list[Conn] = []
        self._lock = threading.Lock()

    @contextmanager
    def conn(self) -> Iterator[Conn]:
        with self._lock:
            c = self._free.pop() if self._free else None
        if c is None or c.closed:
            c = connect(self._dsn, application_name=f"mvgraph daemon {self._name}")
            try:
                jobs.bookkeeping_commit(c)  # firings commit as refreshes do
            except BaseException:
                c.close()
                raise
        ok = False
        try:
            yield c
            ok = True
        finally:
            if ok and not c.closed and c.info.transaction_status == \
                    psycopg.pq.TransactionStatus.IDLE:
                with self._lock:
                    self._free.append(c)
            else:
                c.close()

    def warm(self, count: int, prepare: Callable[[Conn], None]) -> None:
        """Open ``count`` connections now, each passed to ``prepare`` once (at most: the
        database may be away; the first use then connects)."""
        try:
            with ExitStack() as held:  # all held at once: count distinct connections
                for _ in range(count):
                    prepare(held.enter_context(self.conn()))
        except (psycopg.Error, MvgraphError) as exc:
            log.info("firing connections not opened ahead (%s)", _first_line(exc))

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for c in free:
            c.close()


class Daemon:
    """Fires the schedules of one database and runs their jobs, until stopped."""

    def __init__(self, config: DaemonConfig) -> None:
        config.check()
        self.config = config
        self.name = config.name
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._schedules: dict[int, Schedule] = {}
        self._armed: dict[int, Schedule] = {}  # those with an APScheduler job
        self._ticks: list[_TickEntry] = []
        self._tick_wake = threading.Event()  # a tick became due sooner, or stopping
        self._listeners: list[Callable[[DaemonEvent], None]] = []
        self._stop_hooks: list[Callable[[], None]] = []
        self._pool = _Pool(config.dsn, self.name)
        self.graphs = GraphCache()  # the catalog's graph, shared by ticks and the worker
        self._scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},  # private to this process, never shared
            executors={"default": _FireExecutor(self._fire_due, FIRE_BATCHES)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 100},
            timezone=UTC)
        self._daemon_id: int | None = None
        self._worker: Any = None
        # the database went away: firing is paused until a resync has caught up every
        # schedule; _unfired keeps each schedule's earliest slot that could not be recorded
        self._outage = threading.Event()
        self._unfired: dict[int, datetime] = {}
        # /healthz: healthy while a heartbeat reached the database lately (no connection per ask)
        self.health = Health(max(DEFAULT_MAX_AGE_S, 3 * config.heartbeat_s))
        self._retry_log = Outage(log)  # one warning per outage of the listener's connection

    # ---- hooks ----------------------------------------------------------------------------------
    def add_tick(self, fn: Tick, every_s: float, name: str | None = None, *,
                 idle_s: float | None = None) -> None:
        """Call ``fn(conn)`` every ``every_s`` seconds (first soon after start) on a thread of
        its own with a pooled autocommit connection; an exception is logged, never fatal.
        For target-lag planning (:meth:`fire` submits as a schedule) and metrics. ``idle_s``
        (longer): the period while the daemon hears of no job queued or ended (NOTIFY); such
        news makes the tick due ``every_s`` after its last run again. A tick that returns a
        number is due that many seconds after it ran (at least ``every_s``)."""
        if every_s <= 0 or (idle_s is not None and idle_s < every_s):
            raise UsageError("a tick's period must be positive")
        with self._lock:
            self._ticks.append(_TickEntry(fn, every_s,
                                          name or str(getattr(fn, "__name__", "tick")), idle_s))

    def add_listener(self, fn: Callable[[DaemonEvent], None]) -> None:
        """Call ``fn(event)`` for every :data:`DaemonEvent` (on the thread that caused it)."""
        with self._lock:
            self._listeners.append(fn)

    def add_stop_hook(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when :meth:`run` ends, after the jobs and connections (e.g. to send
        the alerts still queued for the webhook)."""
        with self._lock:
            self._stop_hooks.append(fn)

    def schedules(self) -> list[Schedule]:
        """The schedules as last read from the table."""
        with self._lock:
            return list(self._schedules.values())

    def fire(self, schedule_id: int, slot: datetime, reason: str | None = None) -> int | None:
        """Claim ``slot`` of a schedule and submit its job (as its owner), with the overlap
        rule; returns the job id, or None (claimed elsewhere, skipped or waiting)."""
        with self._lock:
            sched = self._schedules.get(schedule_id)
        if sched is None:
            return None
        return self._fire_slot(sched, slot, reason)

    # ---- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Fire nothing more; running jobs get ``shutdown_s``, then are requeued."""
        self._stopping.set()
        self._tick_wake.set()

    def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM / SIGINT when called in the main thread)."""
        self._install_signals()
        threads = [threading.Thread(target=self._listen_loop, name="listen", daemon=True),
                   threading.Thread(target=self._tick_loop, name="ticks", daemon=True)]
        worker_thread: threading.Thread | None = None
        if self.config.workers > 0:
            from mvgraph.jobs.worker import Worker, WorkerConfig

            self._worker = Worker(WorkerConfig(self.config.dsn, self.config.workers,
                                               shutdown_s=self.config.shutdown_s,
                                               name=self.name, poll_s=5.0, heartbeat_s=2.0,
                                               row_beat_s=IN_PROCESS_WORKER_ROW_S),
                                  graphs=self.graphs)
            worker_thread = threading.Thread(target=self._worker.run, name="worker",
                                             daemon=True)
        _event("started", f"daemon {self.name} started ({self.config.workers} workers)")
        self._scheduler.start()
        for t in threads:
            t.start()
        if worker_thread is not None:
            worker_thread.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self._scheduler.shutdown(wait=True)  # firings in flight complete
            if self._worker is not None:
                self._worker.stop()
            for t in threads:
                t.join(10)
            # no more heartbeats: the row goes now, or the jobs' drain would look like a
            # silent daemon (alerts)
            self._unregister()
            if worker_thread is not None:
                worker_thread.join(self.config.shutdown_s + 35)
            self._pool.close()
            with self._lock:
                hooks = list(self._stop_hooks)
            for hook in hooks:
                try:
                    hook()
                except Exception as exc:
                    log.warning("stopping: %s", _first_line(exc))
            _event("stopped", f"daemon {self.name} stopped")

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stopping.is_set() and self._worker is not None:
                self._worker.hurry()  # a second signal: no more grace
            _event("signal", f"signal {signum}: stopping (running jobs get "
                             f"{self.config.shutdown_s:.0f}s)")
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # ---- the table: load, LISTEN, resync --------------------------------------------------------
    def _listen_loop(self) -> None:
        conn: Conn | None = None
        backoff = 0.5
        last_resync = last_beat = last_check = last_job = 0.0
        while not self._stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect_listener()
                    self._retry_log.ok()
                    # the firing connections, with fire_slots planned, before anything fires
                    self._pool.warm(FIRE_BATCHES, lambda c: store.warm_firing(c, self.name))
                    self._resync(conn, first=True)
                    self._heartbeat(conn)
                    backoff = 0.5
                    last_resync = last_beat = time.monotonic()
                elif self._outage.is_set():  # a firing met the outage before this connection
                    self._resync(conn, first=True)
                ends = False
                changed: list[str] = []  # handled after the generator: it holds the connection
                for note in wait_notifies(conn, min(0.5, self.config.check_s)):
                    if note.channel == store.CHANNEL:
                        if note.payload not in changed:
                            changed.append(note.payload)
                    else:
                        ends = True
                for payload in changed:
                    self._on_change(conn, payload)
                now = time.monotonic()
                if self._stopping.is_set():
                    break
                if ends:
                    self._wake_ticks()
                if ends:
                    last_job = now
                every = self.config.check_s if now - last_job < IDLE_AFTER_S \
                    else self.config.idle_check_s  # a NOTIFY lost is caught later when idle
                if ends or now - last_check >= every:
                    last_check = now
                    if ends or self._schedule_work(conn):  # one statement when idle
                        self._close_ends(conn)
                if now - last_resync >= self.config.resync_s:
                    last_resync = now
                    self._resync(conn, first=False)
                if now - last_beat >= self.config.heartbeat_s:
                    last_beat = now
                    self._heartbeat(conn)
            except (psycopg.Error, MvgraphError) as exc:
                self.health.lost()
                self._lost()
                self._retry_log.failed("database unavailable (%s); retrying in %.1fs",
                                       _first_line(exc), backoff, extra={"event": "db_down"})
                if conn is not None:
                    conn.close()
                conn = None
                if outage.wait_to_retry(self.config.dsn, backoff, self._stopping):
                    backoff = 0.5  # the server is back: reconnect and catch up at once
                else:
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        if conn is not None:
            conn.close()

    def _connect_listener(self) -> Conn:
        from mvgraph.refresh.service import check_schema

        conn = connect(self.config.dsn, application_name=f"mvgraph daemon {self.name}")
        try:
            check_schema(conn)
            store.listen(conn)
            jobs.listen(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _resync(self, conn: Conn, *, first: bool) -> None:
        """Make the APScheduler jobs match the table; ``first`` (start, reconnect): catch up
        the slots missed while nobody fired them. After an outage (firing paused) every
        schedule is caught up, from its last recorded slot or its first slot that could not
        be recorded, before firing resumes: each slot of the gap gets its row."""
        recovering = first and self._outage.is_set()
        with self._lock:
            unfired = dict(self._unfired)
        rows = store.schedules(conn)
        seen = {s.id for s in rows}
        behind: list[Schedule] = []
        quiet = len(rows) > QUIET_ARMING  # thousands of schedules: one line, not one each
        armed_now = 0
        for s in rows:
            with self._lock:
                armed = self._armed.get(s.id)
            if first and _runnable(s) and (recovering or armed is None
                                           or armed.timing != s.timing):
                behind.append(s)
            else:
                armed_now += self._apply(s, quiet=quiet)
        if behind:
            # catch up first, then arm from the next slot after it: no slot in between is
            # lost, none is seen twice
            nexts = self._catch_up(conn, behind, unfired,
                                   "the database was unavailable" if recovering
                                   else "no daemon ran at the time")
            # the soonest first: with thousands of schedules, those due within the second are
            # armed before the daily ones
            never = datetime.max.replace(tzinfo=UTC)
            for s in sorted(behind, key=lambda s: nexts.get(s.id) or never):
                armed_now += self._apply(s, nexts.get(s.id), quiet=quiet)
        if quiet and armed_now:
            _event("armed", f"{armed_now} schedules armed (each is logged at debug level)")
        with self._lock:
            gone = [i for i in self._schedules if i not in seen]
        for i in gone:
            self._forget(i)
        if recovering:
            with self._lock:
                for sid, slot in unfired.items():
                    if self._unfired.get(sid) == slot:
                        del self._unfired[sid]
                again = bool(self._unfired)
            if not again:
                self._outage.clear()
                with suppress(SchedulerNotRunningError):
                    self._scheduler.resume()

    def _lost(self, sid: int | None = None, slot: datetime | None = None) -> None:
        """The database went away: pause firing (the slots due meanwhile are caught up when
        it answers again), forget pooled connections (a restart ended them); ``slot``: the
        first slot of schedule ``sid`` that could not be recorded."""
        with self._lock:
            if sid is not None and slot is not None and (
                    sid not in self._unfired or slot < self._unfired[sid]):
                self._unfired[sid] = slot
        if not self._outage.is_set():
            self._outage.set()
            with suppress(SchedulerNotRunningError):
                self._scheduler.pause()
        self._pool.close()

    def _on_change(self, conn: Conn, payload: str) -> None:
        op, _, ident = payload.partition(":")
        if not ident.isdigit():
            return
        sid = int(ident)
        found = store.schedules(conn, sid) if op != "delete" else []
        if found:
            self._apply(found[0])
        else:
            self._forget(sid)

    def _apply(self, s: Schedule, first_slot: datetime | None = None, *,
               quiet: bool = False) -> bool:
        """Follow a schedule's row: arm, re-arm (new clock), disarm (paused, broken, gone);
        ``first_slot``: the first slot to fire (after a catch-up), else the next one.
        ``quiet``: arming is logged at debug level (the caller logs a summary). True when it
        armed the schedule."""
        with self._lock:
            self._schedules[s.id] = s
            armed = self._armed.get(s.id)
        if not _runnable(s):
            if armed is not None:
                self._disarm(s.id, "paused" if not s.enabled else
                             "broken" if s.is_broken else "not on a clock")
            return False
        if armed is not None and armed.timing == s.timing and first_slot is None:
            return False
        extra = {"next_run_time": first_slot} if first_slot is not None else {}
        self._scheduler.add_job(_noop, SlotTrigger(s.timing), id=str(s.id), name=s.name,
                                replace_existing=True, **extra)
        with self._lock:
            self._armed[s.id] = s
        if not quiet or log.isEnabledFor(logging.DEBUG):
            (log.debug if quiet else log.info)(
                f"schedule {s.id} ({s.name}): {'re-' if armed else ''}armed, "
                f"{SlotTrigger(s.timing)}", extra={"event": "armed", "schedule": s.id})
        return True

    def _forget(self, sid: int) -> None:
        with self._lock:
            self._schedules.pop(sid, None)
        self._disarm(sid, "removed")

    def _disarm(self, sid: int, why: str) -> None:
        with self._lock:
            was = self._armed.pop(sid, None)
        if was is None:
            return
        with suppress(JobLookupError):  # already gone
            self._scheduler.remove_job(str(sid))
        _event("disarmed", f"schedule {sid} ({was.name}): {why}", schedule=sid)

    # ---- firing ---------------------------------------------------------------------------------
    def _fire_due(self, due: list[tuple[int, list[datetime]]]) -> None:
        """APScheduler says slots are due (per schedule coalesced: the latest runs, earlier
        ones missed); those due together are fired by one statement."""
        if self._stopping.is_set():
            return
        todo: list[tuple[Schedule, datetime, str | None]] = []
        early: list[tuple[Schedule, list[datetime]]] = []
        for sid, run_times in due:
            with self._lock:
                s = self._armed.get(sid)
            if s is None:
                continue
            if len(run_times) > 1:
                early.append((s, run_times[:-1]))
            todo.append((s, run_times[-1], None))
        if early:
            try:
                self._coalesced(early)
            except (psycopg.Error, MvgraphError) as exc:
                self._not_fired([(s, times[0]) for s, times in early], exc)
                behind = {s.id for s, _ in early}
                todo = [x for x in todo if x[0].id not in behind]
        now = datetime.now(UTC)
        grace = timedelta(seconds=self.config.misfire_grace_s)
        for s, slot, _ in [x for x in todo if now - x[1] > grace]:
            try:
                self._record(s, slot, SlotStatus.MISSED, "later than the misfire grace")
            except (psycopg.Error, MvgraphError) as exc:
                self._not_fired([(s, slot)], exc)
        todo = [x for x in todo if now - x[1] <= grace]
        if not todo:
            return
        try:
            try:
                self._fire_slots(todo)
            except (psycopg.Error, MvgraphError) as exc:  # a pooled connection may have died:
                log.info("%d slot%s: retrying (%s)", len(todo), "" if len(todo) == 1 else "s",
                         _first_line(exc), extra={"event": "retry"})
                self._fire_slots(todo)  # once more, on a new one (the statement is atomic)
        except (psycopg.Error, MvgraphError) as exc:
            self._not_fired([(s, slot) for s, slot, _ in todo], exc)

    def _coalesced(self, early: list[tuple[Schedule, list[datetime]]]) -> None:
        """Record the slots APScheduler coalesced (the daemon was late) as missed, in one
        statement; one line per schedule."""
        why = "coalesced: the daemon was late"
        with self._pool.conn() as conn:
            recorded = store.record_slots(conn, [(s.id, t) for s, times in early for t in times],
                                          SlotStatus.MISSED, why, self.name)
        for s, times in early:
            done = [t for t in times if (s.id, t) in recorded]
            for t in done:
                self._emit(Skipped(s.id, s.name, t, SlotStatus.MISSED, why))
            if done:  # one line for all of them
                _event("missed", f"schedule {s.id} ({s.name}): {len(done)} slot"
                                 f"{'' if len(done) == 1 else 's'} from {done[0].isoformat()} "
                                 f"to {done[-1].isoformat()} {why}",
                       schedule=s.id, slot=done[-1].isoformat())

    def _not_fired(self, slots: list[tuple[Schedule, datetime]], exc: BaseException) -> None:
        lost = outage.session_lost(exc)
        for s, slot in slots:
            if lost:  # the database is away: caught up when it is back
                self._lost(s.id, slot)
            log.warning("schedule %d (%s): slot %s not fired (%s)", s.id, s.name,
                        slot.isoformat(), _first_line(exc),
                        extra={"event": "fire_failed", "schedule": s.id})

    def _fire_slot(self, s: Schedule, slot: datetime, reason: str | None) -> int | None:
        """Claim ``slot`` and submit its job in one statement (see the module doc)."""
        return self._fire_slots([(s, slot, reason)]).get((s.id, slot))

    def _fire_slots(self, todo: list[tuple[Schedule, datetime, str | None]]
                    ) -> dict[tuple[int, datetime], int]:
        """Claim slots and submit their jobs with one statement (``store.fire_slots``: the
        overlap rule, exactly once, the owner's job, the next run); returns the jobs
        submitted by (schedule id, slot)."""
        known = {s.id: s for s, _, _ in todo}
        calls: list[list[store.Firing]] = []  # one slot per schedule and statement
        for s, slot, reason in sorted(todo, key=lambda x: x[1]):
            firing = store.Firing(s.id, slot, reason, s.next_slot())
            call = next((c for c in calls if all(f.schedule_id != s.id for f in c)), None)
            if call is None:
                calls.append([firing])
            else:
                call.append(firing)
        results: list[store.FireResult] = []
        with self._pool.conn() as conn:
            for firings in calls:
                results += store.fire_slots(conn, firings, self.name, JOB_OPTIONS)
        submitted: dict[tuple[int, datetime], int] = {}
        for r in results:
            s = known[r.schedule_id]
            slot = r.slot
            if r.outcome == "fired" and r.job_id is not None:
                submitted[(s.id, slot)] = r.job_id
                lateness = ((r.submitted_at or datetime.now(UTC)) - slot).total_seconds()
                _event("fired", f"schedule {s.id} ({s.name}): slot {slot.isoformat()} fired "
                                f"job {r.job_id} ({lateness * 1000:.0f} ms after its slot)"
                                + (f"; {r.reason}" if r.reason else ""),
                       schedule=s.id, job=r.job_id, slot=slot.isoformat())
                self._emit(Fired(s.id, s.name, slot, r.job_id, lateness, r.reason))
            elif r.outcome in ("waits", "skipped"):
                status = SlotStatus.FIRED if r.outcome == "waits" else SlotStatus.SKIPPED
                why = r.reason or ""
                _event(r.outcome, f"schedule {s.id} ({s.name}): slot {slot.isoformat()} "
                                  f"{r.outcome}: {why}", schedule=s.id, slot=slot.isoformat())
                self._emit(Skipped(s.id, s.name, slot, status, why))
            elif r.outcome != "taken":  # gone, refused
                log.warning("schedule %d (%s): slot %s not fired (%s)", s.id, s.name,
                            slot.isoformat(), r.reason,
                            extra={"event": "fire_failed", "schedule": s.id})
        return submitted

    def _submit(self, conn: Conn, s: Schedule, slot: datetime) -> int:
        """Submit the schedule's statement, owned by the schedule's owner (a worker runs it
        logged in as the login that created the schedule); link the job to the slot."""
        job = jobs.queue(conn, JobKind.REFRESH, s.what, JOB_OPTIONS,
                         for_schedules=[s.id])
        store.set_slot_job(conn, s.id, slot, job)
        return job

    def _record(self, s: Schedule, slot: datetime, status: SlotStatus, reason: str, *,
                quiet: bool = False) -> bool:
        """Claim a slot as not run; ``quiet``: no log line (the caller logs a summary)."""
        with self._pool.conn() as conn:
            done = store.claim_slot(conn, s.id, slot, status, reason=reason,
                                    claimed_by=self.name)
        if done and quiet:
            self._emit(Skipped(s.id, s.name, slot, status, reason))
        elif done:
            _event(status.value, f"schedule {s.id} ({s.name}): slot {slot.isoformat()} "
                                 f"{status.value}: {reason}", schedule=s.id,
                   slot=slot.isoformat())
            self._emit(Skipped(s.id, s.name, slot, status, reason))
        return done

    def _catch_up(self, conn: Conn, behind: list[Schedule], unfired: dict[int, datetime],
                  why: str) -> dict[int, datetime | None]:
        """Coalesce each schedule's slots missed since the last recorded one (or its creation;
        or from ``unfired``, a slot that could not be recorded, when earlier) into at most one
        run (``timing.catch_up``); record the others as missed (slots recorded meanwhile keep
        their row). A few statements for all the schedules: their last slots, the missed
        rows, the catch-up runs. Returns each schedule's first slot after those handled."""
        lasts = store.last_clock_slots(conn, [s.id for s in behind])
        now = datetime.now(UTC)
        grace = timedelta(seconds=self.config.misfire_grace_s)
        nexts: dict[int, datetime | None] = {}
        gaps: list[tuple[Schedule, list[datetime], datetime | None]] = []
        runs: list[tuple[Schedule, datetime, str | None]] = []
        for s in behind:
            last = lasts.get(s.id)
            since = max(last, s.created_at) if last else s.created_at
            first_unfired = unfired.get(s.id)
            if first_unfired is not None and first_unfired <= since:
                since = first_unfired - timedelta(microseconds=1)
            c = catch_up(s.timing, since, now, grace)
            nexts[s.id] = c.next
            if c.latest_missed is None:
                continue
            missed = [t for t in slots_between(s.timing, since, now, limit=100_000)
                      if t != c.run]
            gaps.append((s, missed, c.run))
            if c.run is not None:
                runs.append((s, c.run, f"catch-up run for {c.skipped + 1} missed slots"
                             if c.skipped else "catch-up run for a missed slot"))
        wanted = [(s.id, t) for s, missed, _ in gaps for t in missed[-MISSED_ROWS:]]
        with self._pool.conn() as pooled:
            recorded = store.record_slots(pooled, wanted, SlotStatus.MISSED, why, self.name)
        for s, missed, run in gaps:
            done = [t for t in missed[-MISSED_ROWS:] if (s.id, t) in recorded]
            for t in done:
                self._emit(Skipped(s.id, s.name, t, SlotStatus.MISSED, why))
            if missed:  # one line for the whole gap, not one per slot
                _event("missed", f"schedule {s.id} ({s.name}): {len(missed)} slot"
                                 f"{'' if len(missed) == 1 else 's'} missed from "
                                 f"{missed[0].isoformat()} to {missed[-1].isoformat()} ({why}; "
                                 f"{len(done)} recorded)"
                                 + (f"; catch-up run for slot {run.isoformat()}" if run else ""),
                       schedule=s.id, slot=missed[-1].isoformat())
        if runs:
            self._fire_slots(runs)
        return nexts

    # ---- run ends -------------------------------------------------------------------------------
    def _schedule_work(self, conn: Conn) -> bool:
        """Whether a run ended unclosed or a waiting slot can be submitted (one statement)."""
        with translated():
            row = conn.execute(query("schedule_work")).fetchone()
        return bool(row and row[0])

    def _close_ends(self, conn: Conn) -> None:
        """Write each ended run to its schedule (once across daemons), then submit the waiting
        slots (overlap queue) whose schedule is free."""
        ended: list[RunEnded] = []
        while True:
            with translated():  # one statement (schedules locked in id order, as firings do)
                rows = conn.execute(query("close_schedule_ends")).fetchall()
            for sid, _slot, job, status, error, name, failures, broke in rows:
                ended.append(RunEnded(int(str(sid)), str(name), int(str(job)), str(status),
                                      int(str(failures)), bool(broke), _opt(error)))
            if len(rows) < 100:
                break
        for e in ended:
            _event("run_ended", f"schedule {e.schedule_id} ({e.name}): job {e.job_id} "
                                f"{e.status}" + (f": {e.error}" if e.error else "")
                                + (f" ({e.failure_count} failures in a row)"
                                   if e.status == "failed" else ""),
                   schedule=e.schedule_id, job=e.job_id)
            if e.broken:
                _event("broken", f"schedule {e.schedule_id} ({e.name}) is broken after "
                                 f"{e.failure_count} failures in a row; `mvgraph schedule "
                                 f"resume {e.name}` runs it again",
                       schedule=e.schedule_id, job=e.job_id)
            self._emit(e)
        self._submit_waiting(conn)

    def _submit_waiting(self, conn: Conn) -> None:
        fired: list[tuple[Schedule, datetime, int]] = []
        with translated(), conn.transaction():
            for sid, slot in sorted(conn.execute(query("waiting_slots")).fetchall(),
                                    key=_by_schedule):
                assert isinstance(slot, datetime)
                with self._lock:
                    s = self._schedules.get(int(str(sid)))
                if s is None or not _runnable(s):
                    conn.execute(query("drop_waiting_slot"), {
                        "id": sid, "slot": slot,
                        "reason": "the schedule was paused, broken or removed while it waited"})
                    continue
                fired.append((s, slot, self._submit(conn, s, slot)))
        for s, slot, job in fired:
            _event("fired", f"schedule {s.id} ({s.name}): waiting slot {slot.isoformat()} "
                            f"fired job {job}", schedule=s.id, job=job, slot=slot.isoformat())
            self._emit(Fired(s.id, s.name, slot, job,
                             (datetime.now(UTC) - slot).total_seconds(), "waited"))

    # ---- heartbeat, ticks, events ---------------------------------------------------------------
    def _heartbeat(self, conn: Conn) -> None:
        with self._lock:
            armed = len(self._armed)
        with translated():
            row = None
            if self._daemon_id is not None:
                row = conn.execute(query("daemon_heartbeat"),
                                   {"id": self._daemon_id, "schedules": armed}).fetchone()
            if row is None:
                row = conn.execute(query("daemon_register"), {
                    "name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                    "workers": self.config.workers, "version": __version__}).fetchone()
                assert row is not None
                self._daemon_id = int(str(row[0]))
                conn.execute(query("daemon_heartbeat"),
                             {"id": self._daemon_id, "schedules": armed})
        self.health.beat()

    def _unregister(self) -> None:
        if self._daemon_id is None:
            return
        try:
            with connect(self.config.dsn) as conn:
                conn.execute(query("daemon_remove"), {"id": self._daemon_id})
        except (psycopg.Error, MvgraphError):
            pass  # the row goes stale instead

    def _wake_ticks(self) -> None:
        """Job activity was heard: ticks with an idle period are due ``every_s`` after their
        last run again."""
        with self._lock:
            for t in self._ticks:
                if t.idle_s is not None:
                    t.due = min(t.due, t.ran + t.every_s)
        self._tick_wake.set()

    def _tick_loop(self) -> None:
        """Run the due ticks; sleep until the next one is due (or :meth:`_wake_ticks`)."""
        start = time.monotonic()
        while not self._stopping.is_set():
            with self._lock:
                now = time.monotonic() - start
                due = [t for t in self._ticks if now >= t.due]
                nxt = min((t.due for t in self._ticks), default=now + 1.0)
            if not due:
                self._tick_wake.wait(min(max(nxt - now, 0.01), 1.0))
                self._tick_wake.clear()
                continue
            for t in due:
                with self._lock:
                    t.ran = time.monotonic() - start
                    t.due = t.ran + (t.idle_s or t.every_s)
                try:
                    with self._pool.conn() as conn:
                        wanted = t.fn(conn)
                    if wanted is not None:
                        with self._lock:
                            t.due = t.ran + max(wanted, t.every_s)
                except Exception as exc:
                    log.warning("tick %s failed: %s", t.name, _first_line(exc),
                                extra={"event": "tick_failed"})

    def _emit(self, event: DaemonEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(event)
            except Exception as exc:
                log.warning("event listener failed: %s", _first_line(exc))


# ---- status -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """One live daemon, as ``mvgraph daemon status`` shows it."""

    id: int
    name: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    workers: int
    schedules: int
    version: str
    running_jobs: list[int]

    def to_dict(self) -> dict[str, Any]:
        """The documented ``daemon status --json`` element."""
        return {"id": self.id, "name": self.name, "host": self.host, "pid": self.pid,
                "started_at": self.started_at.isoformat(),
                "heartbeat_at": self.heartbeat_at.isoformat(), "workers": self.workers,
                "schedules": self.schedules, "version": self.version,
                "running_jobs": self.running_jobs}


def live_daemons(conn: Conn, within_s: float = 10.0) -> list[DaemonInfo]:
    """Daemons whose heartbeat is newer than ``within_s`` seconds."""
    with translated():
        rows = conn.execute(query("live_daemons"), {"within": within_s}).fetchall()
    out = []
    for r in rows:
        assert isinstance(r[4], datetime) and isinstance(r[5], datetime)
        jobs_now = r[9] if isinstance(r[9], list) else []
        out.append(DaemonInfo(int(str(r[0])), str(r[1]), str(r[2]), int(str(r[3])), r[4], r[5],
                              int(str(r[6])), int(str(r[7])), str(r[8]),
                              [int(j) for j in jobs_now]))
    return out


# ---- helpers ----------------------------------------------------------------------------------

def _runnable(s: Schedule) -> bool:
    return (s.enabled and not s.is_broken and s.view_exists
            and s.timing.kind is not ScheduleKind.LAG)


def _by_schedule(row: tuple[object, ...]) -> tuple[int, float]:
    """Rows (schedule id, slot, ...) in the order fire_slots locks schedules."""
    slot = row[1]
    return int(str(row[0])), slot.timestamp() if isinstance(slot, datetime) else 0.0


def _noop() -> None:  # APScheduler wants a callable; _FireExecutor calls Daemon._fire instead
    return None


def _event(event: str, message: str, **ids: Any) -> None:
    log.info(message, extra={"event": event, **ids})


def _opt(v: object) -> str | None:
    return None if v is None else str(v)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class JsonLines(logging.Formatter):
    """``--log-json``: one JSON object per line: time, level, event, message, and the
    schedule, job and slot it is about when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(), "logger": record.name,
            "event": getattr(record, "event", None), "message": record.getMessage()}
        for key in ("schedule", "job", "slot"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_text:  # as ScrubFilter left it: scrubbed
            out["error"] = record.exc_text
        elif record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)
