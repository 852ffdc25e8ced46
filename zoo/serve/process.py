"""`python -m zoo.serve` as a child process on free loopback ports: what tests/test_serve.py and make
bench-serve start. Standard library and httpx only, so the process that starts a server needs neither
KServe nor Ray (it may run another Python: .venv-serve's)."""

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The server on `exports` with `args`, its output in `log_path`, started by `python` (a path) in a
    session of its own, so that `stop` can end whatever it leaves."""

    def __init__(self, python, exports, args=(), log_path=None, cwd=None):
        self.http, self.grpc = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.log_path = Path(log_path)
        self.proc = subprocess.Popen(
            [str(python), "-m", "zoo.serve", str(exports), "--http-port", str(self.http), "--grpc-port",
             str(self.grpc), *args], cwd=cwd, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def ready(self) -> bool:
        """Whether GET /v2/health/ready answers 200; a RuntimeError if the server has exited."""
        import httpx

        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 60):
        """SIGTERM to the server (not its process group: a Ray cluster's daemons would die under it before
        it could stop them), then SIGKILL to the whole group, whatever is left of it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
