"""Run a multi-worker job here: `r2u-launch-local --workers=2 -- r2u-train ...`.

Starts N copies of the command on 127.0.0.1, each with its own TF_CONFIG (worker i of N,
free ports unless --port_base is given), and streams their output line by line with a
`[worker i]` prefix. When a worker exits non-zero the others are stopped and the launcher
exits with that worker's code; Ctrl-C (SIGINT) and SIGTERM are forwarded to every worker.
A command that is a Python script (like bin/train) runs with this interpreter.

    r2u-launch-local --workers=2 -- r2u-train --strategy=multi_worker \\
        --data_dir=runs/data/synthetic --model_dir=runs/mw

(from a checkout: `bin/launch_local --workers=2 -- bin/train ...`).

Restart a stopped job with the same command plus --resume: every worker restores the
chief's (worker 0's) latest checkpoint.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

from r2u import cli

_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes.", lower_bound=1)
_PORT_BASE = flags.DEFINE_integer("port_base", None, "Worker i listens on port_base + i "
                                  "(default: free ports chosen by the OS).", lower_bound=1)
_GRACE = flags.DEFINE_float("grace_seconds", 10.0, "Wait after SIGINT/SIGTERM before "
                            "SIGKILL when stopping workers.", lower_bound=0.0)

_PRINT_LOCK = threading.Lock()


def free_ports(count: int) -> list:
    """Ports the OS reports free on 127.0.0.1 (held open together, so all distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: list, index: int) -> str:
    """The TF_CONFIG of worker `index` of the cluster `addresses` ("host:port")."""
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": index}})


def worker_command(command: list) -> list:
    """`command`, run by this interpreter if it is a Python script (bin/train is)."""
    if _is_python_script(command[0]):
        return [sys.executable, *command]
    return list(command)


def _is_python_script(path: str) -> bool:
    if path.endswith(".py"):
        return True
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def _stream(index: int, pipe) -> None:
    """Copies one worker's output to stdout, `[worker i] ` before each line."""
    for raw in iter(pipe.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with _PRINT_LOCK:
            print(f"[worker {index}] {line}", flush=True)
    pipe.close()


def _signal(proc, sig: int) -> None:
    """Signals the worker's process group (the worker and anything it started)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # already gone
        pass


def _stop(procs: list, sig: int, grace: float) -> None:
    """Sends `sig` to every running worker, then SIGKILL to those still up after `grace`."""
    for proc in procs:
        if proc.poll() is None:
            _signal(proc, sig)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by a signal


def _say(message: str) -> None:
    with _PRINT_LOCK:
        print(f"[launch_local] {message}", file=sys.stderr, flush=True)


def main(argv):
    command = argv[1:]
    if not command:
        raise app.UsageError("give the command after --, e.g. -- bin/train --strategy=...")
    n = _WORKERS.value
    ports = ([_PORT_BASE.value + i for i in range(n)] if _PORT_BASE.value
             else free_ports(n))
    addresses = [f"127.0.0.1:{p}" for p in ports]
    received = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # forwarded, not acted on here
        signal.signal(sig, lambda signum, frame: received.append(signum))
    procs, threads = [], []
    for i in range(n):
        env = dict(os.environ, TF_CONFIG=tf_config(addresses, i))
        # Own process group: a terminal's Ctrl-C reaches the workers once, through us.
        proc = subprocess.Popen(worker_command(command), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        threads.append(threading.Thread(target=_stream, args=(i, proc.stdout),
                                        daemon=True))
        threads[-1].start()
    _say(f"{n} workers: {' '.join(command)}")
    for i, proc in enumerate(procs):
        _say(f"worker {i}: pid {proc.pid}, {addresses[i]}")
    code = _supervise(procs, received)
    for thread in threads:
        thread.join(timeout=5.0)
    return code


def _supervise(procs: list, received: list) -> int:
    """Waits for the workers; the first failure or signal stops them all."""
    while True:
        if received:
            _say(f"got signal {received[0]}: forwarding it to the workers")
            _stop(procs, received[0], _GRACE.value)
            return 128 + received[0]
        codes = [proc.poll() for proc in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            index, code = failed[0]
            _say(f"worker {index} exited with code {code}: stopping the others")
            _stop(procs, signal.SIGTERM, _GRACE.value)
            return _exit_code(code)
        if all(c == 0 for c in codes):
            _say("all workers finished")
            return 0
        time.sleep(0.1)


run = cli.entry_point(main)  # `r2u-launch-local` and `bin/launch_local`


if __name__ == "__main__":
    run()
