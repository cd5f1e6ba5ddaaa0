"""Loader: a :class:`~adsys.shards.stream.ShardStream`'s batches made in worker processes.

Workers decode samples and stack each batch straight into a shared-memory slot of their
own (:class:`BatchRing`); the consumer receives only the slot's address and the labels, and
hands out tensors that view the slot. Workers run ahead freely, bounded by credits: each may
have ``prefetch_factor`` batches sent and not yet received. Batches come round-robin over
the workers (worker 0, 1, …, skipping finished ones), so a loader's sequence of batches is
fixed by the stream's seeds, as with a DataLoader.

Why not ``torch.utils.data.DataLoader``: its per-batch machinery (an index round trip per
batch, a feeder thread that pickles, profiler hooks) cost ~0.3 ms of consumer CPU and
~0.4 ms of worker CPU per batch, a quarter of the whole pipeline for 32-slice batches
(``bench/bench_loader.py``). :class:`ShardStream` is still an ``IterableDataset``: under a
plain DataLoader it splits its work by DataLoader worker and returns collated batches.
"""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing
import os
import traceback
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from adsys.shards.stream import ShardStream, _to_torch

_ALIGN = 64  # byte alignment of the arrays in a ring slot
_POLL = 1.0  # seconds between liveness checks of a worker the consumer waits for
_DONE = "done"
_ERROR = "error"


class BatchRing:
    """Shared-memory batch slots from loader workers to the consumer, without copies.

    A worker stacks a batch's arrays, cast to the batch dtype, straight into a free slot of
    its own and sends only the slot's address and the labels. The consumer hands out
    tensors that view the slot (all four share one storage); the slot is freed when that
    storage is (``weakref.finalize`` on the array under it), i.e. when the batch and every
    view of it are gone. So a batch costs no shared-memory segment, no page faults and no
    copy in the training process. ``slots`` per worker cover the batches in flight plus the
    ones the consumer holds; a consumer that keeps more alive makes the worker wait up to
    ``wait`` seconds once, then send such batches the ordinary way (counted as copied):
    holding on to batches is safe, only slower.
    """

    def __init__(
        self, stream: ShardStream, workers: int, slots: int, context: Any, wait: float = 0.2
    ) -> None:
        self.geometry = self.geometry_of(stream, workers, slots)
        self.fields = stream.batch_fields
        self.shape = (stream.batch_size, 1, *stream.item_shape)
        self.dtype = stream.dtype
        itemsize = self.dtype.itemsize
        self.field_bytes = -(-math.prod(self.shape) * itemsize // _ALIGN) * _ALIGN
        self.slots, self.wait = slots, wait
        size = (workers, slots, len(self.fields) * self.field_bytes)
        self.buffer = torch.zeros(size, dtype=torch.uint8).share_memory_()
        self.busy = torch.zeros((workers, slots), dtype=torch.uint8).share_memory_()
        self.free = [context.Semaphore(slots) for _ in range(workers)]

    @staticmethod
    def geometry_of(stream: ShardStream, workers: int, slots: int) -> tuple:
        """What a ring's layout depends on."""
        return (stream.batch_size, stream.item_shape, stream.batch_fields, stream.dtype,
                workers, slots)

    def _fields(self, raw: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The (n, 1, *item) tensors of the batch fields in a slot's bytes."""
        shape = (len(self.fields), n, *self.shape[1:])
        strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
        strides[0] = self.field_bytes // self.dtype.itemsize
        return list(raw.view(self.dtype).as_strided(shape, strides).unbind(0))

    def put(
        self, worker: int, n: int, fill: Callable[[list[torch.Tensor]], Any]
    ) -> tuple[int, Any] | None:
        """Let ``fill`` write an n-item batch into the (n, 1, *item) tensors of a free slot
        of ``worker``; (the slot's index, what ``fill`` returned), or None when no slot came
        free in time (the caller then sends the batch the ordinary way)."""
        if not self.free[worker].acquire(timeout=self.wait):
            self.wait = 0.0  # the consumer holds on to batches: stop waiting for it
            return None
        busy = self.busy[worker].numpy()
        slot = int(np.flatnonzero(busy == 0)[0])
        busy[slot] = 1
        return slot, fill(self._fields(self.buffer[worker, slot], n))

    def take(self, worker: int, slot: int, n: int) -> dict[str, torch.Tensor]:
        """The slot's (n, 1, *item) tensors, valid until the last of them (or of their
        views) is freed; then the slot goes back to ``worker``."""
        under = self.buffer[worker, slot].numpy()  # the storage of what we hand out keeps it
        weakref.finalize(under, self._release, worker, slot)
        return dict(zip(self.fields, self._fields(torch.from_numpy(under), n), strict=True))

    def _release(self, worker: int, slot: int) -> None:
        self.busy[worker, slot] = 0
        self.free[worker].release()


def _work(
    stream: ShardStream,
    worker: int,
    n_workers: int,
    ring: BatchRing,
    commands: Any,
    results: Any,
    credits: Any,
) -> None:
    """A worker process: for each epoch number received on ``commands``, send that epoch's
    batches on ``results``, then ``_DONE`` (or the error); stop on ``None``. Between epochs
    it waits for the next command, so the consumer can still fetch the shared memory of
    batches sent the ordinary way."""
    torch.set_num_threads(1)
    wait, parent = ring.wait, os.getppid()
    try:
        while (epoch := commands.recv()) is not None:
            stream.set_epoch(epoch)
            ring.wait = wait
            try:
                for batch in stream.batches(worker, n_workers, ring):
                    while not credits.acquire(timeout=_POLL):
                        if os.getppid() != parent:
                            return  # the consumer died (e.g. SIGKILL): do not linger
                    results.send(batch)
                results.send(_DONE)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                text = traceback.format_exc()
                try:
                    results.send((_ERROR, exc, text))
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    results.send((_ERROR, RuntimeError(f"{type(exc).__name__}: {exc}"), text))
    except (KeyboardInterrupt, EOFError):
        pass  # the consumer got the interrupt too, or went away


class _Workers:
    """A loader's worker processes, their ring and pipes; alive until :meth:`close` (or
    until this object is collected)."""

    def __init__(self, loader: ShardLoader) -> None:
        ctx, n = loader.context, loader.num_workers
        self.slots = loader.prefetch_factor + 2  # in flight, being made, held by the consumer
        self.ring = BatchRing(loader.stream, n, self.slots, ctx)
        self.credits = [ctx.Semaphore(loader.prefetch_factor) for _ in range(n)]
        self.commands = [ctx.Pipe(duplex=False) for _ in range(n)]  # (recv, send): to worker
        self.results = [ctx.Pipe(duplex=False) for _ in range(n)]  # from worker
        self.procs = [
            ctx.Process(
                target=_work,
                args=(
                    loader.stream, w, n, self.ring,
                    self.commands[w][0], self.results[w][1], self.credits[w],
                ),
                name=f"adsys-shard-loader-{w}",
                daemon=True,
            )  # fmt: skip
            for w in range(n)
        ]
        try:
            for proc in self.procs:
                proc.start()
        except BaseException:  # e.g. a stream that does not pickle for spawn
            for proc in self.procs:
                if proc.is_alive():
                    proc.terminate()
            raise
        for (recv, _), (_, send) in zip(self.commands, self.results, strict=True):
            recv.close()  # the workers' ends
            send.close()
        sends = [send for _, send in self.commands]
        self._close = weakref.finalize(self, _stop, self.procs, sends, self.results, False)

    def fits(self, loader: ShardLoader) -> bool:
        """Whether these workers can serve ``loader``'s next epoch: alive, same geometry."""
        geometry = BatchRing.geometry_of(loader.stream, loader.num_workers, self.slots)
        return self.ring.geometry == geometry and all(p.is_alive() for p in self.procs)

    def epoch(self, epoch: int) -> Iterator[dict[str, Any]]:
        """One epoch's raw batches, round-robin over the workers. Stopped before its end
        (or failing), it stops the workers: they may be mid-batch."""
        for _, send in self.commands:
            send.send(epoch)
        turn, complete = collections.deque(range(len(self.procs))), False
        try:
            while turn:
                w = turn.popleft()
                msg = _receive(w, self.results[w][0], self.procs[w])
                if msg == _DONE:
                    continue
                turn.append(w)
                self.credits[w].release()
                yield msg
            complete = True
        finally:
            if not complete:
                self.close(terminate=True)

    def close(self, terminate: bool = False) -> None:
        self._close.detach()
        _stop(self.procs, [send for _, send in self.commands], self.results, terminate)


def _stop(procs: list, sends: list, results: list, terminate: bool) -> None:
    """Stop worker processes: ask them to (``None``), or terminate them outright."""
    for proc, send in zip(procs, sends, strict=True):
        if terminate and proc.is_alive():
            proc.terminate()
        with contextlib.suppress(OSError):
            send.send(None)
            send.close()
    for proc in procs:
        proc.join(timeout=_POLL)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    for recv, _ in results:
        recv.close()


class ShardLoader:
    """Batches of a :class:`ShardStream` from ``num_workers`` worker processes (in-process
    when 0), with skipped corrupt samples summed.

    Iterating yields the stream's batches without the ``skipped`` field; ``skipped`` holds
    the total over all workers since the loader was made, ``copied`` the batches that came
    the ordinary way because the consumer was holding all of a worker's ring slots.
    ``len()`` is ``steps_per_epoch`` in resampled mode; call :meth:`set_epoch` before each
    epoch's ``iter()``. A worker's error is raised in the consumer (with the worker's
    traceback as a note); a worker that dies (e.g. killed when out of memory) raises
    :class:`RuntimeError` naming its exit code.

    Workers start with the first epoch and, with ``persistent_workers``, serve every
    following epoch (they keep the stream as it was then; only the epoch number is sent),
    until :meth:`close` or the loader is collected; without, each epoch starts its own. An
    epoch left unfinished (the iterator closed or dropped early) stops its workers.

    Args:
        stream: the batches' source.
        num_workers: worker processes (per rank).
        pin_memory: page-lock batches for faster host-to-GPU copies (when CUDA is present).
        prefetch_factor: batches each worker may have ready ahead of the consumer.
        persistent_workers: keep the workers between epochs.
        multiprocessing_context: ``fork``, ``spawn`` or ``forkserver`` (default: Python's).
    """

    def __init__(
        self,
        stream: ShardStream,
        *,
        num_workers: int = 2,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        persistent_workers: bool = True,
        multiprocessing_context: str | None = None,
    ) -> None:
        if num_workers < 0 or prefetch_factor < 1:
            raise ValueError("need num_workers >= 0 and prefetch_factor >= 1")
        self.stream = stream
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.context = multiprocessing.get_context(multiprocessing_context)
        self.skipped = 0
        self.copied = 0
        self._workers: _Workers | None = None

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        if not self.stream.resampled:
            raise TypeError("a split-mode ShardLoader has no fixed length")
        return self.stream.steps_per_epoch

    def close(self) -> None:
        """Stop the workers (a later ``iter()`` starts new ones)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = self._from_workers() if self.num_workers else self.stream.batches()
        pin = self.pin_memory and torch.cuda.is_available()
        for batch in batches:
            self.skipped += int(batch.pop("skipped"))
            if "slot" in batch:
                batch = {**self._workers.ring.take(*batch.pop("slot")), **_to_torch(batch)}
            elif self.num_workers and "image" in batch:
                self.copied += 1
            if not batch:
                continue
            if pin:
                fields = self.stream.batch_fields
                batch = {k: v.pin_memory() if k in fields else v for k, v in batch.items()}
            yield batch

    def _from_workers(self) -> Iterator[dict[str, Any]]:
        """Raw worker batches of the stream's current epoch."""
        if self._workers is None or not self._workers.fits(self):
            self.close()
            self._workers = _Workers(self)
        workers = self._workers
        yield from workers.epoch(self.stream.epoch)
        if not self.persistent_workers:
            self.close()


def _receive(w: int, conn: Any, proc: Any) -> Any:
    """Worker ``w``'s next message; raises its error, or a RuntimeError if it died."""
    died = f"shard loader worker {w} (pid {proc.pid}) stopped without finishing"
    while not conn.poll(_POLL):
        if not proc.is_alive():
            raise RuntimeError(f"{died}: exit code {proc.exitcode} (-9: killed, often for memory)")
    try:
        msg = conn.recv()
    except EOFError as exc:
        raise RuntimeError(f"{died}: exit code {proc.exitcode}") from exc
    if isinstance(msg, tuple) and msg and msg[0] == _ERROR:
        _, exc, text = msg
        exc.add_note(f"raised in shard loader worker {w}:\n{text}")
        raise exc
    return msg


def make_loader(stream: ShardStream, **options: Any) -> ShardLoader:
    """A :class:`ShardLoader` over ``stream`` (``options``: its keyword arguments; two
    persistent workers by default). Call ``loader.set_epoch(e)`` before each epoch's
    ``iter``."""
    return ShardLoader(stream, **options)
