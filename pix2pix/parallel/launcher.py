"""Start a data-parallel training job through MindSpore's launcher (msrun) and watch it.

`python launch.py parallel.device_num=N` runs this in the process the user started: it has
composed the config and made the run folder, and now starts msrun, which starts the scheduler
and this machine's workers (each `python launch.py ...` again, into the same run folder). It
then shows rank 0's log, stops the whole job when one worker dies, and turns Ctrl-C into an
orderly stop with a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from omegaconf import DictConfig

from pix2pix.errors import STOP_SIGNALS, Interrupted, Pix2PixError
from pix2pix.parallel.env import WORKER_ROLE
from pix2pix.parallel.lifeline import LAUNCHER_PID

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
MSRUN_REPORT_SECONDS = 1.5  # msrun polls its workers every second
# msrun's own line when a worker ends badly (mindspore/parallel/cluster/process_entity/_api.py).
WORKER_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
# MindSpore's own C++ log lines below ERROR: kept in the worker logs, not echoed to the terminal.
NATIVE_CHATTER = re.compile(r"^\[(DEBUG|INFO|WARNING)\] [A-Z_]+\(\d+,")
# After the first Ctrl-C the workers finish their step and rank 0 writes a checkpoint.
STOP_GRACE_SECONDS = 300


@dataclass
class Worker:
    pid: int
    rank: int
    log: Path


@dataclass
class JobLayout:
    """What this machine runs: its workers' ranks and where their logs go."""

    run_dir: Path
    device_num: int
    nodes: int
    node_rank: int
    local: int = field(init=False)

    def __post_init__(self):
        self.local = self.device_num // self.nodes

    @property
    def workers_dir(self) -> Path:
        return self.run_dir / "workers"

    @property
    def first_rank(self) -> int:
        return self.node_rank * self.local

    def log_of(self, rank: int) -> Path:
        return self.workers_dir / f"worker_{rank}.log"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def hydra_quote(value: str) -> str:
    """A command-line override value Hydra reads back verbatim."""
    if re.fullmatch(r"[\w./:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def worker_env(folder: Path, nccl_library: str | None = None) -> dict[str, str]:
    """The environment msrun passes on to the workers.

    - msrun starts `python` from PATH: a wrapper in `folder` that runs this interpreter goes first
      (a wrapper, not a link, so a virtual environment's interpreter keeps its environment);
    - unbuffered output, so the worker logs are complete when a worker is killed;
    - this process's pid, so that a worker started after it died ends at once;
    - `nccl_library` preloaded: MindSpore's GPU plugin finds its bundled libnccl.so.2 through an
      RPATH that LD_LIBRARY_PATH cannot override; a preloaded one is used instead.
    """
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = dict(os.environ, PATH=f"{folder}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env[LAUNCHER_PID] = str(os.getpid())  # the workers end when this process ends (pix2pix.parallel.lifeline)
    if nccl_library:
        library = Path(nccl_library).expanduser().absolute()
        if not library.is_file():
            raise Pix2PixError(
                f"parallel.nccl_library={nccl_library}: no such file; point it at a libnccl.so.2 (pip install "
                "nvidia-nccl-cu11 puts one in site-packages/nvidia/nccl/lib/) or set it to null"
            )
        env["LD_PRELOAD"] = " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD")]))
    return env


def archive_earlier_logs(workers_dir: Path) -> None:
    """A resumed job keeps the logs of the launch before it in workers/before-TIME/."""
    earlier = list(workers_dir.glob("*.log")) if workers_dir.is_dir() else []
    if not earlier:
        return
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(max(p.stat().st_mtime for p in earlier)))
    target = workers_dir / f"before-{stamp}"
    target.mkdir(exist_ok=True)
    for path in earlier:
        path.rename(target / path.name)


class LogTail:
    """The new complete lines of a growing file."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in complete]


def last_error_line(path: Path) -> str | None:
    """The last line of a worker's log that says what went wrong."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if re.search(r"\bERROR\b|Error:|Exception:", line):
            return line.split("] - ", 1)[-1].strip()  # without the logging prefix
    return None


def describe_exit(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class MsrunJob:
    """One msrun invocation on this machine and its supervision."""

    def __init__(self, layout: JobLayout, command: list[str], env: dict[str, str]):
        self.layout = layout
        self.command = command
        self.env = env
        self.process: subprocess.Popen | None = None
        self.workers: dict[int, Worker] = {}
        self.stop_signal: int | None = None
        self.started = time.time()
        self.stop_deadline = 0.0
        self.ended_at: float | None = None

    # -- processes -------------------------------------------------------------------------
    def find_workers(self) -> None:
        """This machine's workers: msrun's children with MS_ROLE=MS_WORKER (their RANK_ID names them)."""
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.Error:
            return
        for child in children:
            if child.pid in self.workers:
                continue
            try:
                environ = child.environ()
            except psutil.Error:
                continue
            if environ.get("MS_ROLE") == WORKER_ROLE:
                index = int(environ.get("DEVICE_ID", len(self.workers)))
                rank = int(environ.get("RANK_ID", self.layout.first_rank + index))
                self.workers[child.pid] = Worker(child.pid, rank, self.layout.log_of(rank))

    def alive_workers(self) -> list[Worker]:
        alive = []
        for worker in self.workers.values():
            try:
                if psutil.Process(worker.pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(worker)
            except psutil.Error:
                pass
        return alive

    def all_workers_ended(self) -> bool:
        """Every worker of this machine has exited, long enough ago for msrun (which checks them
        once a second) to have reported one that failed."""
        if len(self.workers) < self.layout.local or self.alive_workers():
            self.ended_at = None
            return False
        self.ended_at = self.ended_at or time.monotonic()
        return time.monotonic() - self.ended_at > MSRUN_REPORT_SECONDS

    def signal_workers(self, signum: int) -> None:
        for worker in self.alive_workers():
            try:
                # msrun starts each worker in its own session: its group holds it and its helpers.
                os.killpg(worker.pid, signum) if signum == signal.SIGKILL else os.kill(worker.pid, signum)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        """SIGKILL the workers, then msrun and its scheduler (msrun's own process group)."""
        self.find_workers()
        self.signal_workers(signal.SIGKILL)
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process:
            self.process.wait()

    # -- signals from the user ---------------------------------------------------------------
    def on_signal(self, signum, frame) -> None:
        if self.stop_signal is not None:
            log.warning("%s again: stopping every worker at once", signal.Signals(signum).name)
            self.kill_all()
            raise KeyboardInterrupt
        self.stop_signal = signum
        self.stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
        log.warning(
            "%s: the %d workers stop after their current step and rank 0 writes a checkpoint (again: stop at once)",
            signal.Signals(signum).name,
            len(self.workers),
        )
        self.signal_workers(signal.SIGTERM)

    # -- the job -------------------------------------------------------------------------------
    def run(self) -> None:
        """Start msrun and wait for the job; Pix2PixError when a worker fails, Interrupted on a stop."""
        layout = self.layout
        msrun_log = layout.workers_dir / "msrun.log"
        rank_log = LogTail(layout.log_of(layout.first_rank))
        msrun_lines = LogTail(msrun_log)
        handlers = {sig: signal.signal(sig, self.on_signal) for sig in STOP_SIGNALS}
        try:
            with open(msrun_log, "w") as out:
                self.process = subprocess.Popen(
                    self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
                )
            while True:
                self.find_workers()
                self.echo(rank_log)
                failure = next((m for line in msrun_lines.lines() if (m := WORKER_FAILED.search(line))), None)
                if failure and self.stop_signal is None:
                    worker_status = int(failure.group(2))
                    if worker_status - 128 in STOP_SIGNALS:  # a worker was sent SIGINT/SIGTERM: all stopped together
                        self.stop_signal = worker_status - 128
                        break
                    self.fail(int(failure.group(1)), worker_status)
                code = self.process.poll()
                if self.stop_signal is not None and (code is not None or not self.alive_workers()):
                    break
                if self.all_workers_ended():
                    break  # msrun would have reported a failure by now; its scheduler lingers for seconds
                if code is not None:
                    if code != 0:
                        self.kill_all()
                        raise Pix2PixError(
                            f"msrun ended with exit status {code} before the workers finished; "
                            f"see {msrun_log} and {layout.workers_dir / 'scheduler.log'}"
                        )
                    break
                if self.stop_signal is not None and time.monotonic() > self.stop_deadline:
                    log.warning("the workers did not stop within %d s: stopping them at once", STOP_GRACE_SECONDS)
                    break
                time.sleep(POLL_SECONDS)
            self.echo(rank_log)
        finally:
            self.kill_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if self.stop_signal is not None:
            last = layout.run_dir / "checkpoints" / "last.ckpt"
            written = last.is_file() and last.stat().st_mtime >= self.started
            raise Interrupted(self.stop_signal, last if written else None)

    @staticmethod
    def echo(tail: LogTail) -> None:
        """Rank 0's new log lines on this terminal (it writes them to launch.log itself)."""
        for line in tail.lines():
            if not NATIVE_CHATTER.match(line):
                print(line, flush=True)

    def fail(self, pid: int, code: int) -> None:
        worker = self.workers.get(pid)
        self.kill_all()
        who = f"rank {worker.rank}" if worker else f"worker process {pid}"
        log_path = worker.log if worker else self.layout.workers_dir
        error = last_error_line(worker.log) if worker else None
        raise Pix2PixError(
            f"{who} stopped ({describe_exit(code)}), so the whole job was stopped; its log: {log_path}"
            + (f"; last error there: {error}" if error else "")
        )


def launch_workers(par: DictConfig, run_dir: Path, worker_args: list[str]) -> dict[str, float]:
    """Run a training job on par.device_num workers through msrun, each `python <worker_args>`
    writing into `run_dir`; returns the run's metrics.json (written by rank 0) on the machine that
    hosts rank 0, else {}."""
    layout = JobLayout(run_dir.absolute(), par.device_num, par.nodes, par.node_rank)
    archive_earlier_logs(layout.workers_dir)
    layout.workers_dir.mkdir(parents=True, exist_ok=True)
    port = par.master_port or free_port(par.master_addr)
    command = [
        sys.executable,
        "-m",
        "pix2pix.parallel.lifeline",  # msrun, tied to this process: it dies when this process dies
        str(os.getpid()),
        "mindspore.parallel.cluster.run",  # msrun
        f"--worker_num={par.device_num}",
        f"--local_worker_num={layout.local}",
        f"--master_addr={par.master_addr}",
        f"--master_port={port}",
        f"--node_rank={par.node_rank}",
        f"--log_dir={layout.workers_dir}",
        "--join=True",
        f"--cluster_time_out={par.cluster_timeout}",
        f"--tail_worker_log={par.device_num}",  # no rank has that number: this process shows rank 0's log
        *worker_args,
        f"hydra.run.dir={hydra_quote(str(layout.run_dir))}",
        "hydra.output_subdir=null",  # this process recorded the config
    ]
    log.info(
        "starting %d of %d workers through msrun (node %d of %d, scheduler %s:%d); their logs: %s",
        layout.local,
        par.device_num,
        par.node_rank,
        par.nodes,
        par.master_addr,
        port,
        layout.workers_dir,
    )
    wrapper_dir = Path(tempfile.mkdtemp(prefix="pix2pix-msrun-"))
    try:
        MsrunJob(layout, command, worker_env(wrapper_dir, par.get("nccl_library"))).run()
    finally:
        shutil.rmtree(wrapper_dir, ignore_errors=True)
    if layout.node_rank != 0:
        log.info("this node's workers finished; rank 0 (node 0) wrote the run")
        return {}
    metrics_file = layout.run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise Pix2PixError(f"the job ended without {metrics_file}; see {layout.log_of(0)}")
    log.info("all %d workers finished; run folder: %s", par.device_num, layout.run_dir)
    return json.loads(metrics_file.read_text())
