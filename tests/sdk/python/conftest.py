"""Harness for the Python SDK tests: the real herald binary on a free loopback
port with a TOML config, HS256 tokens, and log capture for failure messages.

HERALD_BIN names the binary (default: target/release/herald of the repo).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
API_KEY = "sdk-test-api-key"
HMAC_SECRET = "sdk-test-hmac-secret"

CONFIG = """
[[namespaces]]
name = "chat"
allow_subscribe_for_client = true
allow_publish = true
presence = true
join_leave = true
allow_presence_for_client = true
allow_history_for_client = true
history_size = 100
history_ttl = "300s"
"""


def herald_bin() -> Path:
    env = os.environ.get("HERALD_BIN")
    path = Path(env).resolve() if env else REPO_ROOT / "target" / "release" / "herald"
    if not path.exists():
        pytest.fail(
            f"herald binary not found at {path}; build it with "
            "`cargo build --release -p herald` or set HERALD_BIN",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict, secret: str = HMAC_SECRET) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(sig)}"


def conn_token(sub: str, ttl: int = 3600, **extra) -> str:
    return sign_jwt({"sub": sub, "exp": int(time.time()) + ttl, **extra})


def uniq() -> str:
    return secrets.token_hex(4)


@dataclass
class Herald:
    port: int
    cmdline: list[str]
    proc: subprocess.Popen
    _output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    def logs(self, lines: int = 60) -> str:
        return "".join(self._output[-lines:])


@pytest.fixture(scope="module")
def herald():
    """A herald serving the `chat` namespace; stopped after the module's tests."""
    tmp = tempfile.mkdtemp(prefix="herald-sdk-py-")
    config = Path(tmp) / "herald.toml"
    config.write_text(CONFIG)
    port = free_port()
    cmd = [
        str(herald_bin()),
        "--listen", f"127.0.0.1:{port}",
        "--api-key", API_KEY,
        "--token-hmac-secret", HMAC_SECRET,
        "--config", str(config),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"
    env["HERALD_LOG"] = os.environ.get("HERALD_LOG", "info")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    h = Herald(port=port, cmdline=cmd, proc=proc)

    def pump():
        for line in proc.stdout:
            h._output.append(line)
            if len(h._output) > 5000:
                del h._output[:1000]

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 20
    last = "no answer yet"
    while True:
        if proc.poll() is not None:
            time.sleep(0.2)
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(
                f"herald exited ({proc.returncode}) before it was ready\n"
                f"command: {' '.join(cmd)}\n--- herald output ---\n{h.logs(200)}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(f"{h.base_url}/healthz", timeout=1) as res:
                if res.status == 200:
                    break
                last = f"GET /healthz -> {res.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(f"herald not ready after 20 s (last: {last})\n{h.logs(200)}", pytrace=False)
        time.sleep(0.1)
    try:
        yield h
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Appends herald's log tail to the report of a failing test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "herald" in item.funcargs:
        report.sections.append(("herald log tail", item.funcargs["herald"].logs(60)))
