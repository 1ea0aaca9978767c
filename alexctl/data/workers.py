"""Worker processes for preprocess: a function over tasks, results in task order, stoppable at any moment.

    ordered_map(fn, tasks, workers, stop, where)  ->  fn(task) for each task, in order

Each worker is a forkserver process with a pipe of its own for tasks and one for results, so that every way
a run can end is clean. multiprocessing.Pool and concurrent.futures share one result queue among their
workers, and a worker killed while writing to it (a SIGTERM sent to the whole process group by systemd or
`timeout`, the OOM killer) leaves half a message there: Pool then deadlocks in terminate() on the queue's lock
and ProcessPoolExecutor in shutdown() on the half message (both seen, Python 3.11). Here a dead worker is only
an ended pipe:
  - the command stopped (SIGINT, SIGTERM): it ends its workers and says so in one sentence (WorkFailed);
  - a worker killed: its pipe ends; the command stops in one sentence (WorkFailed);
  - the command killed (SIGKILL): each worker reads the end of its task pipe and exits, or dies of SIGPIPE
    writing its result (no BrokenPipeError traceback); none outlives it, nor does the fork server.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection, wait

from alexctl.errors import WorkFailed
from alexctl.stop import StopSignals, ignore_in_worker

OUT_OF_MEMORY = 75  # a worker's exit status when memory ran out outside a task (EX_TEMPFAIL: run again with less)
QUEUED = 2  # tasks sent to a worker and not answered: it never waits for the next one
WINDOW = 4  # per worker: tasks sent beyond the one whose result the caller waits for (bounds the results held)
# Set in the fork server before it starts (it keeps them). One thread per worker for BLAS and OpenMP:
# parallelism comes from the workers, and oversubscribed threads made preprocessing three times slower
# (measured, 2 cores). PYTHONSAFEPATH: the server must not put the current directory first on its path, or
# a folder named `alexctl` there (the parent of a clone) shadows the installed package.
SERVER_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONSAFEPATH")
PRELOAD = ["alexctl.data.shards", "alexctl.data.transform"]  # workers start with torch and numpy imported


def ordered_map(fn, tasks: list, workers: int, stop: StopSignals, where: str):
    """fn(task) for each task, in order, computed by `workers` processes (1: in this process). A stop
    request is noticed within half a second: WorkFailed("stopped by SIGTERM <where>")."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    with _Workers(fn, min(workers, len(tasks))) as pool:
        results: dict[int, object] = {}  # finished out of order
        sent = done = 0
        while done < len(tasks):
            while done not in results:
                while sent < min(len(tasks), done + WINDOW * pool.count) and min(pool.pending) < QUEUED:
                    pool.send(sent, tasks[sent])  # to the least busy worker: a slow task holds up only its own
                    sent += 1
                try:
                    results.update(pool.receive(timeout=0.5))
                except _WorkerEnded as e:
                    stop.check(where)  # a signal to the whole process group ended the workers too
                    raise WorkFailed(f"{e} {where}") from None
                stop.check(where)
            yield results.pop(done)
            done += 1


class _WorkerEnded(Exception):
    pass


class _Workers:
    def __init__(self, fn, count: int):
        self.fn, self.count = fn, count
        self.processes: list = []
        self.tasks: list[Connection] = []
        self.results: list[Connection] = []
        self.pending = [0] * count  # tasks sent to each worker and not answered

    def __enter__(self) -> "_Workers":
        context = _context()
        try:
            for _ in range(self.count):
                task_r, task_w = context.Pipe(duplex=False)
                result_r, result_w = context.Pipe(duplex=False)
                process = context.Process(
                    target=_serve, args=(self.fn, task_r, result_w), daemon=True, name="alexctl-preprocess-worker"
                )
                process.start()
                task_r.close()  # the worker's ends: with them closed here, a dead worker is an ended pipe
                result_w.close()
                self.processes.append(process)
                self.tasks.append(task_w)
                self.results.append(result_r)
        except BaseException:
            self.__exit__(True)
            raise
        return self

    def send(self, index: int, task) -> None:
        w = min(range(self.count), key=lambda k: self.pending[k])
        try:
            self.tasks[w].send((index, task))
        except OSError:
            raise _WorkerEnded(self._ended(w)) from None
        self.pending[w] += 1

    def receive(self, timeout: float) -> dict:
        """{task index: result} of the results ready within `timeout` seconds ({} if none)."""
        got = {}
        for conn in wait(self.results, timeout):
            w = self.results.index(conn)
            try:
                index, ok, value = conn.recv()
            except (EOFError, OSError):
                ended = self._ended(w)
                if self.processes[w].exitcode == OUT_OF_MEMORY:
                    raise WorkFailed(self._out_of_memory(w)) from None
                raise _WorkerEnded(ended) from None
            if not ok and isinstance(value, MemoryError):
                raise WorkFailed(self._out_of_memory(w))
            if not ok:
                raise value
            self.pending[w] -= 1
            got[index] = value
        return got

    def _out_of_memory(self, w: int) -> str:
        return (
            f"preprocess worker {w + 1} of {self.count} (pid {self.processes[w].pid}) ran out of memory; every worker "
            "holds its own images while it decodes them: run the same command again with fewer --workers (it "
            "continues where it stopped), or with more memory free."
        )

    def _ended(self, w: int) -> str:
        process = self.processes[w]
        process.join(1.0)
        code = process.exitcode
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exited with status {code}"
            if code is not None
            else "closed its pipe"
        )
        return f"a worker process (pid {process.pid}) {how}"

    def __exit__(self, *exc) -> None:
        """At the end the idle workers read the end of their task pipes and exit; after an error or a stop they
        are ended at once (a SIGTERM, then a SIGKILL for any that does not end within five seconds)."""
        for conn in self.tasks:
            conn.close()
        failed = exc and exc[0] is not None
        for process in self.processes:
            if failed and process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.results:
            conn.close()


def _context():
    """The forkserver context, its server started with SERVER_VARIABLES set."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    saved = {k: os.environ.get(k) for k in SERVER_VARIABLES}
    os.environ.update({k: "1" for k in SERVER_VARIABLES})
    try:
        forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return context


def _serve(fn, tasks: Connection, results: Connection) -> None:
    """A worker: (index, task) in, (index, ok, fn(task) or the exception) out, until its task pipe ends."""
    import torch

    ignore_in_worker()  # Ctrl-C reaches the whole process group: the command stops its workers itself
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a result for a killed command: end quietly
    torch.set_num_threads(1)
    try:
        while True:
            try:
                index, task = tasks.recv()
            except (EOFError, OSError):  # the command ended (or was killed)
                return
            try:
                reply = (index, True, fn(task))
            except MemoryError:
                reply = (index, False, MemoryError())  # the parent names this worker and the remedy
            except Exception as e:  # a bug: the command reports it
                reply = (index, False, e)
            try:
                results.send(reply)
            except MemoryError:
                raise
            except Exception:  # an exception that cannot be pickled
                results.send((index, False, RuntimeError(f"{type(reply[2]).__name__}: {reply[2]}")))
    except MemoryError:  # receiving or sending: no traceback, an exit status the parent reads as out of memory
        os._exit(OUT_OF_MEMORY)
