"""A child process whose output is read while it runs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import IO


class DrainedProcess(subprocess.Popen[str]):
    """A process (a daemon, a worker) whose stdout and stderr are read while it runs, by a
    thread each: a pipe nobody reads fills up (64 KiB: some 10 s of the JSON log of a daemon
    firing five one-second schedules), and the child's next log line then blocks in write(2)
    holding the logging lock, so each of its threads that logs stops. ``communicate`` waits for
    the exit and returns all that was written."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | str | None = None
                 ) -> None:
        super().__init__(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        self._read: tuple[list[str], list[str]] = ([], [])
        self._readers = [threading.Thread(target=_drain, args=(pipe, into), daemon=True)
                         for pipe, into in zip((self.stdout, self.stderr), self._read,
                                               strict=True)]
        for reader in self._readers:
            reader.start()

    def communicate(self, input: str | None = None,
                    timeout: float | None = None) -> tuple[str, str]:
        assert input is None
        self.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return "".join(self._read[0]), "".join(self._read[1])


def _drain(pipe: IO[str] | None, into: list[str]) -> None:
    assert pipe is not None
    with pipe:
        for line in pipe:
            into.append(line)
