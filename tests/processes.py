"""Running Kevin as a real process in tests: `python -m kevin.cli …` with this checkout
first on the path."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kevin_env(**settings: str | None) -> dict[str, str]:
    """The environment for a Kevin subprocess: this checkout importable, settings applied
    (None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEVIN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["KEVIN_LOG_FORMAT"] = "json"
    for key, value in settings.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(*args: str, timeout: float = 60, **settings: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kevin.cli", *args], env=kevin_env(**settings),
        capture_output=True, text=True, timeout=timeout, check=False)


async def run_cli_async(db_url: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`kevin …` on ``db_url`` without blocking the test's event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kevin.cli", *args, env=kevin_env(KEVIN_DATABASE_URL=db_url),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Server:
    """`kevin serve` in a subprocess on a free port."""

    def __init__(self, stderr_path: Path, *serve_args: str, **settings: str | None) -> None:
        self.serve_args = serve_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.stderr_path = stderr_path
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kevin.cli", "serve", "--port", str(self.port),
                 *self.serve_args],
                env=kevin_env(**self.settings), stdout=subprocess.DEVNULL, stderr=stderr)
        return self

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"kevin serve exited: {self.log()}")
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"kevin serve not ready in {timeout}s: {self.log()}")
                await asyncio.sleep(0.1)

    async def stop(self, sig: int = 15, timeout: float = 15) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return await asyncio.to_thread(self.process.wait, timeout)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        body = await r.json(content_type=None) if r.content_length != 0 else None
        return r.status, body
