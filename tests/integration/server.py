"""Start the real ``s25rbl serve`` as a child process on ephemeral ports, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

_DNS = re.compile(r"serving DNS \(udp\+tcp\) on (.+)$")
_API = re.compile(r"API on http://(.+?)/ ")
_POLICY = re.compile(r"policy service on (\S+) ")


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    config: Path
    env: dict[str, str]
    dns: list[tuple[str, int]] = field(default_factory=list)
    api: tuple[str, int] | None = None
    policy: tuple[str, int] | None = None  # the policy service, when it listens
    output: list[str] = field(default_factory=list)
    _pump: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.dns[0][0]

    @property
    def port(self) -> int:
        return self.dns[0][1]

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``s25rbl`` CLI against the same configuration and store."""
        return subprocess.run(
            [sys.executable, "-m", "s25rbl", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            input=input,
            timeout=timeout,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"s25rbl did not stop within {timeout} s of signal {sig}") from None
        if self._pump is not None:
            self._pump.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)


def store_url(db: Path | str) -> str:
    """``db`` as the configuration's database URL: a SQLite file path, or a URL already."""
    return db if isinstance(db, str) else f"sqlite:///{db}"


def policy_section(body: str = "") -> str:
    """``[policy]`` with ``body``; listening on a free port of 127.0.0.1 unless ``body`` says
    where (the default port would clash between tests running at once)."""
    listen = "" if re.search(r"^\s*listen\s*=", body, re.MULTILINE) else 'listen = "127.0.0.1:0"\n'
    return f"[policy]\n{listen}{body}"


def write_config(
    path: Path, upstream: tuple[str, int], db: Path | str, extra: str = "", policy: str = ""
) -> Path:
    """A test configuration; ``db`` is a SQLite file path or a database URL; ``policy`` the
    body of its ``[policy]`` section."""
    url = store_url(db)
    if isinstance(db, Path):  # s25rbl creates the file, never a folder named in its configuration
        db.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""
[dns]
listen = ["127.0.0.1:0", "[::1]:0"]
zone = "bl.s25rbl.test"
whitelist_zone = "wl.s25rbl.test"
nameservers = ["ns1.s25rbl.test"]
ttl = 300
negative_ttl = 120
tempfail_ttl = 30
tcp_idle_timeout = 2

[resolver]
upstreams = ["{upstream[0]}:{upstream[1]}"]
timeout = 1.0

[database]
url = "{url}"

[api]
listen = "127.0.0.1:0"

[lists]
builtin_whitelist = true
refresh_interval = 0.2

[log]
level = "info"

{policy_section(policy)}
{extra}
"""
    )
    return path


def start_server(config: Path, timeout: float = 30) -> RunningServer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "s25rbl", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return attach(process, config, env, timeout)


def attach(
    process: subprocess.Popen[str], config: Path, env: dict[str, str], timeout: float = 30
) -> RunningServer:
    """Follow a starting ``serve`` process: wait for the addresses it prints, then keep reading.

    One reader thread for the whole life of the process parses the banner and drains the pipe,
    so the child never blocks on it and a child that prints nothing cannot hang the test.
    """
    server = RunningServer(process, config, env)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.output.append(line)
            match = _DNS.search(line)
            if match:
                for item in match.group(1).split(", "):
                    host, _, port = item.rpartition(":")
                    server.dns.append((host.strip("[]"), int(port)))
            match = _POLICY.search(line)
            if match:
                host, _, port = match.group(1).rpartition(":")
                server.policy = (host.strip("[]"), int(port))
            match = _API.search(line)
            if match:
                host, _, port = match.group(1).rpartition(":")
                server.api = (host.strip("[]"), int(port))
                ready.set()
        ready.set()

    server._pump = threading.Thread(target=pump, daemon=True)
    server._pump.start()
    ready.wait(timeout)
    if not server.dns or server.api is None:
        server.stop(signal.SIGKILL)
        raise AssertionError("s25rbl did not start:\n" + "".join(server.output))
    return server
