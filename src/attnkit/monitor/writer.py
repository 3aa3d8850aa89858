"""Group commit: one thread writes what many concurrent requests submit, one transaction a round.

Requests hand their prepared records to :meth:`GroupWriter.submit` and wait for the future; the
writer thread takes everything queued (up to ``max_rows``), writes it in one transaction and
answers each request with its own new and duplicate counts. Writes stay serial (SQLite's one
writer) while concurrent requests share a commit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from attnkit.monitor.store import InsertResult, Store

__all__ = ["GroupWriter"]


class GroupWriter:
    """Writes submitted records to ``store`` from one background thread."""

    def __init__(self, store: Store, max_rows: int = 5000) -> None:
        self.store, self.max_rows = store, max_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="attnkit-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: Sequence[dict[str, Any]]) -> Future:
        """Queue prepared rows (:meth:`Store.prepare`); the future gives an InsertResult once
        they are committed."""
        future: Future = Future()
        self._queue.put((list(rows), future))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group, size = [item], len(item[0])
            while size < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this round
                    break
                group.append(item)
                size += len(item[0])
            self._commit(group)

    def _commit(self, group: list[tuple[list, Future]]) -> None:
        try:
            new = self.store.write([row for rows, _ in group for row in rows])
        except Exception as error:
            for _, future in group:
                future.set_exception(error)
            return
        for rows, future in group:
            mine = {row["request_id"] for row in rows} & new
            new -= mine  # an id sent twice in one round counts as new once
            future.set_result(InsertResult(len(mine), len(rows) - len(mine)))

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()
