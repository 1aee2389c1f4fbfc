"""mvgraph's shared settings (``mvgraph settings``): every key, its default and its meaning.

The one place the keys are listed: ``mvgraph settings --help``, the error for an unknown key,
``mvgraph settings`` itself and the documentation's table (``docs/operations.md``) all come
from :data:`SETTINGS`. Imports nothing (the CLI's help reads it without loading the driver).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SESSION_DEFAULT", "SETTINGS", "Setting", "help_list", "markdown_table"]


@dataclass(frozen=True, slots=True)
class Setting:
    """A key's default and meaning. ``default_from``: another setting whose value is this one's
    default (``global_lock_timeout``: the lock timeout), or :data:`SESSION_DEFAULT`."""

    default: str | None
    meaning: str
    default_from: str | None = None

    def default_text(self) -> str:
        """The default as the documentation and ``settings --help`` state it."""
        if self.default_from == SESSION_DEFAULT:
            return "the session's idle_in_transaction_session_timeout (unchanged)"
        if self.default_from is not None:
            return f"the value of {self.default_from}"
        return self.default or ""


#: ``default_from`` of a setting whose default is the session's own parameter, left unchanged.
SESSION_DEFAULT = "session"

SETTINGS: dict[str, Setting] = {
    "retention_days": Setting("7", "days that finished jobs and their steps are kept"),
    "max_concurrent_jobs": Setting("4", "worker jobs running at once, across all workers"),
    "schedule_max_failures": Setting(
        "16", "failures in a row after which the daemon marks a schedule broken"),
    "lock_timeout": Setting("10s", "default lock wait per refresh (e.g. 10s)"),
    "statement_timeout": Setting("0", "default statement timeout per refresh (0 = none)"),
    "wal_slot_max_lag": Setting(
        "1GB", "WAL the replication slot of mode wal may keep before `status` warns"),
    "synchronous_commit": Setting(
        "off", "commit mode of refresh transactions (off: fast, a crash may lose the latest "
               "refreshes but never consistency; on: durable)"),
    "lock_mode": Setting(
        "view", "what a refresh locks: view (alias dml) its views, global (alias on) the whole "
                "database, one run at a time; off nothing (one process only)"),
    "global_lock_timeout": Setting(
        None, "lock_mode global: how long a run waits for the global lock (0 = no limit)",
        default_from="lock_timeout"),
    "global_lock_statement_timeout": Setting(
        None, "lock_mode global: statement timeout of a run holding the global lock",
        default_from="statement_timeout"),
    "global_lock_idle_timeout": Setting(
        None, "lock_mode global: idle-in-transaction timeout of a run's sessions while it "
              "holds the global lock", default_from=SESSION_DEFAULT),
}


def help_list() -> str:
    """The keys, comma-separated, for ``--help`` and errors.

    >>> help_list().startswith("retention_days, max_concurrent_jobs, schedule_max_failures")
    True
    """
    return ", ".join(SETTINGS)


def markdown_table() -> str:
    """The table of settings in docs/operations.md (a test keeps that copy equal to this)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for key, s in SETTINGS.items():
        default = f"`{s.default}`" if s.default_from is None else s.default_text()
        rows.append(f"| `{key}` | {default} | {s.meaning} |")
    return "\n".join(rows)
