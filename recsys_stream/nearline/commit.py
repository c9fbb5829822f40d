"""The worker's commit in two phases: what it holds between them, and how it knows when the
second may run.

A commit makes the states applied since the last one durable (``nearline.worker``, steps 4-6):
every output produced so far (profiles, DLQ records, item-interactions, the states' changelog
records) must be acknowledged by the broker before the states and the input offsets are written
to RocksDB, or a crash could leave a store ahead of its outputs. Waiting for those
acknowledgements on the loop stalled it 3-40 ms at every commit (177 ms at worst in one run) at
5k events/s, and the events that arrived meanwhile waited behind it: the freshness p99. So:

- phase 1 (on the loop): encode the dirty states, produce their changelog records, and close
  the *generation* of outputs produced so far; the states become an :class:`InFlight` commit,
  still readable as the newest states of their users, and the loop goes on;
- phase 2 (on the loop, once :class:`Deliveries` says every output of that generation and the
  ones before it is acknowledged): write the states and offsets in one ``WriteBatch``, then the
  offset markers.

Nothing changes for recovery: the store still only ever holds states whose outputs were
acknowledged, and a crash between the phases replays the input since the last phase 2, as a
crash before the flush did.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from recsys_stream.contracts.user_state import UserHistory


@dataclass
class InFlight:
    """A commit between its phases: produced, not yet acknowledged, not yet stored."""

    generation: int                       # phase 2 waits for every output up to this one
    encoded: dict[bytes, bytes]           # the states' bytes, as logged to the changelog
    states: dict[bytes, UserHistory]      # the same states as objects (readable meanwhile)
    offsets: dict[tuple[str, int], int]   # next input offset per (topic, partition)
    erased: set[bytes]                    # users erased since the commit before
    deleted: list[bytes]                  # ... of which the store deletes these (not re-created)
    started: float                        # perf_counter at phase 1's start
    encode_s: float                       # phase 1's time on the loop


class Deliveries:
    """Outputs handed to the producer and not yet acknowledged, counted per generation.

    Every produce of the worker passes :attr:`callback` as its ``on_delivery`` after calling
    :meth:`sent`; librdkafka calls it back (from ``poll``/``flush`` on the loop's thread, so no
    lock) once the broker acknowledged the record or gave up on it. Generations are needed
    because acknowledgements do not come back in produce order across partitions: a count of
    all outstanding records would wait for outputs produced after phase 1 too, and at a steady
    stream there always are some.

    The callback holds this object, not the worker (a bound method of the worker would make a
    reference cycle, and the worker process runs the cyclic collector rarely).
    """

    def __init__(self) -> None:
        self.generation = 0
        self.unacked: dict[int, int] = {0: 0}
        self.error: str | None = None  # the first delivery that failed, if any
        self.callback = partial(self._done, 0)

    def _done(self, generation: int, err, msg) -> None:
        self.unacked[generation] -= 1
        if err is not None and self.error is None:
            self.error = f"{msg.topic()} [{msg.partition()}]: {err}"

    def sent(self) -> None:
        """One more output of the current generation (call just before ``produce``)."""
        self.unacked[self.generation] += 1

    def close(self) -> int:
        """End the current generation (phase 1); returns its number."""
        closed = self.generation
        self.generation += 1
        self.unacked[self.generation] = 0
        self.callback = partial(self._done, self.generation)
        for g in [g for g, n in self.unacked.items() if n == 0 and g < closed]:
            del self.unacked[g]  # done long ago
        return closed

    def acked(self, generation: int) -> bool:
        """Every output of ``generation`` and of the ones before it acknowledged (or failed:
        see :attr:`error`)."""
        return all(n == 0 for g, n in self.unacked.items() if g <= generation)
