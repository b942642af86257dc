"""`jitpass serve --workers N`: N server processes on one port (SO_REUSEPORT) and one store.

The supervisor opens no store and serves nothing: it checks the port is free, starts worker 0 alone (it
creates or migrates the store; a second process doing it at the same moment would race), then the others,
and prints one "listening" line when all are. Each worker is a whole `jitpass serve` (scheduler and effects
worker included): the store's compare-and-set transitions and leased effect claims keep their work single,
as for replicas behind a load balancer. A worker that dies is started again under its number (so it reads
its own journal of queued requests); SIGTERM/SIGINT stop them all. A worker's stdin is a pipe from here:
when the supervisor dies, even by kill -9, its workers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

from bot.domain.errors import StartupError

__all__ = ["supervise"]

log = logging.getLogger("jitpass.workers")

START_TIMEOUT = 60.0  # seconds for a worker to say it is listening
STOP_TIMEOUT = 20.0  # seconds for a worker to stop after SIGTERM before it is killed
RESTART_DELAY = 1.0  # seconds before a dead worker is started again


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    stdin: int = -1  # the write end of the worker's stdin pipe, held open for as long as it runs
    pump: asyncio.Task[None] | None = field(default=None)


def _check_free(host: str, port: int) -> None:
    """The port must be free (a process holding it with SO_REUSEPORT would otherwise silently share it)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} is in use on {host}: stop the other process or set PORT "
                               "to a free port") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _pump(worker: _Worker) -> None:
    """Pass the worker's stdout through (after its "listening" line), so it never blocks on a full pipe."""
    stream = worker.process.stdout
    assert stream is not None
    while line := await stream.readline():
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()


async def _start(index: int, argv: list[str], *, workers: int, demo: bool) -> _Worker:
    # JITPASS_WORKER makes it a worker (it never supervises); JITPASS_WORKERS tells worker 0 which journals
    # of queued requests belong to no worker of this run.
    env = dict(os.environ, JITPASS_WORKER=str(index), JITPASS_WORKERS=str(workers))
    args = [*argv, "--demo"] if demo else argv
    # The worker's stdin: a plain pipe whose write end only this process holds (os.pipe is close-on-exec, so no
    # other worker inherits it); when this process dies, however, the worker reads end of file and stops. Not
    # the loop's own stdin PIPE: uvloop makes that a socket pair, and with it the workers outlived a kill -9.
    read_end, write_end = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", *args, env=env,
                                                       stdin=read_end, stdout=asyncio.subprocess.PIPE)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        os.close(write_end)
        process.kill()
        await process.wait()
        raise StartupError(f"worker {index} did not start listening within {START_TIMEOUT:.0f} s") from None
    if b"listening" not in line:
        os.close(write_end)
        await process.wait()
        raise StartupError(f"worker {index} stopped before it was listening (exit {process.returncode}); "
                           "its log is above")
    worker = _Worker(index, process, stdin=write_end)
    worker.pump = asyncio.get_running_loop().create_task(_pump(worker), name=f"jitpass-worker-{index}-stdout")
    log.info("event=worker_started worker=%d pid=%d", index, process.pid)
    return worker


async def _stop(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("event=worker_killed worker=%d reason=stop_timeout", worker.index)
            worker.process.kill()
            await worker.process.wait()
        if worker.pump is not None:
            worker.pump.cancel()
            await asyncio.gather(worker.pump, return_exceptions=True)
        _release(worker)


def _release(worker: _Worker) -> None:
    """Close our end of a worker's stdin pipe once it has exited."""
    if worker.stdin >= 0:
        os.close(worker.stdin)
        worker.stdin = -1


async def supervise(*, host: str, port: int, workers: int, demo: bool, verbose: bool) -> None:
    """Run `workers` server processes on host:port until SIGTERM/SIGINT; restart any that dies."""
    _check_free(host, port)
    argv = ["serve", "--host", host, "--port", str(port), *(["-v"] if verbose else [])]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running: list[_Worker] = []
    try:
        # Worker 0 first and alone: it creates or migrates the store (and --demo seeds it, once).
        running.append(await _start(0, argv, workers=workers, demo=demo))
        running += await asyncio.gather(*(_start(i, argv, workers=workers, demo=False) for i in range(1, workers)))
        print(f"jitpass listening on http://{host}:{port}  ({workers} workers; health: /healthz, "
              "Slack: /slack/events, Teams: /api/messages)", flush=True)
        while not stop.is_set():
            exits = {loop.create_task(w.process.wait()): w for w in running}
            stopping = loop.create_task(stop.wait())
            done, pending = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if stop.is_set():
                break
            for task in done:
                dead = exits.get(task)
                if dead is None:
                    continue
                log.error("event=worker_died worker=%d pid=%d exit=%s", dead.index, dead.process.pid,
                          dead.process.returncode)
                if dead.pump is not None:
                    dead.pump.cancel()
                _release(dead)
                running.remove(dead)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESTART_DELAY)
                if stop.is_set():
                    break
                running.append(await _start(dead.index, argv, workers=workers, demo=False))
        log.info("event=stopping reason=signal workers=%d", len(running))
    finally:
        await _stop(running)
