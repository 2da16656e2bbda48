"""Models served by the real `llamafactory-cli api` on 127.0.0.1 for the generation and judge tests (test-only)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(model_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start `llamafactory-cli api` for ``model_dir`` on a free loopback port, its console in ``log_path``; (process, endpoint).

    The template is `empty` unless ``extra_args`` pass another ``--template`` (the last one given wins).
    """
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(Path(sys.executable).parent / "llamafactory-cli"), "api", "--model_name_or_path", str(model_dir), "--template", "empty", *extra_args]
    with open(log_path, "w") as log:  # the server keeps its own copy of the descriptor
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}/v1"


def wait_until_serving(process: subprocess.Popen, endpoint: str, log_path: Path, deadline: float) -> None:
    """Block until ``endpoint`` answers /models; RuntimeError with the log's tail if the server died or ``deadline`` passed."""
    while True:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text(errors="replace")[-2000:])
        try:
            urllib.request.urlopen(endpoint + "/models", timeout=2)
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"llamafactory-cli api did not start in time (log: {log_path})") from None
            time.sleep(0.5)


@contextlib.contextmanager
def served(models: dict[str, Path], folder: Path, timeout: float = 150, args: dict[str, tuple[str, ...]] | None = None) -> Iterator[dict[str, str]]:
    """Serve each ``{name: model_dir}`` at once (they start in parallel); yield ``{name: endpoint}``; stop them after.

    ``args`` gives a model's extra `llamafactory-cli api` arguments (``{name: ("--template", "gemma3")}``).
    Each server's console (its access log too) is ``folder/<name>.log``.
    """
    args = args or {}
    started = {name: (*start_api(model, folder / f"{name}.log", args.get(name, ())), folder / f"{name}.log") for name, model in models.items()}
    try:
        deadline = time.time() + timeout
        for process, endpoint, log_path in started.values():
            wait_until_serving(process, endpoint, log_path, deadline)
        yield {name: endpoint for name, (_process, endpoint, _log) in started.items()}
    finally:
        for process, _endpoint, _log in started.values():
            process.terminate()
            process.wait(timeout=30)
