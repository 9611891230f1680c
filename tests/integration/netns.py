"""A mail lab in network namespaces: real Postfix and unbound in front of s25rbl, for interop tests.

Topology (two namespaces joined by one veth pair; the root namespace gets no interface,
address or route, so nothing the lab does can reach the host's network)::

    namespace <tag>-net ("the internet")        namespace <tag>-mx ("the site")
    +-----------------------------------+        +----------------------------------------+
    | net0 198.51.100.254/24 + clients  |  veth  | mx0 198.51.100.1/24                    |
    |   FakeAuthority on .254:PORT      |<------>|   Postfix smtpd on 198.51.100.1:25     |
    |   SMTP clients bind .7, .8, ...   |        |   unbound on 127.0.0.1:53 (resolv.conf)|
    +-----------------------------------+        |   s25rbl on 127.0.0.1:5300, API :0     |
                                                 +----------------------------------------+

The test process itself stays in the root namespace. Sockets it needs in a lab namespace
(the fake authority's, an SMTP client's, an HTTP client's for the s25rbl API) are created
while the calling *thread* has temporarily entered that namespace (``NetNamespace.entered``,
setns(2)); a socket keeps the namespace it was created in. Every socket is also bound to a
lab address, which does not exist in the root namespace: a slip fails with EADDRNOTAVAIL
instead of sending anything out.

Inside ``<tag>-mx`` the libc resolver (``/etc/netns/<tag>-mx/resolv.conf``) points at unbound,
the "unbound in front of s25rbl" deployment: stub zones send the s25rbl zones to s25rbl and
the test domains (the lab's reverse zone, ``ocn.ne.jp``, ``example.org`` ...) to the fake
authority; every other name is refused by unbound itself (``local-zone: "." refuse``), so
no query can leave the lab. unbound logs every query it receives (only Postfix asks it), so a
test can see exactly what Postfix looked up (``Unbound.queries``).

Use ``mail_lab()`` for the whole thing, or the parts (``NetNamespace``, ``Unbound``,
``Postfix``, ``start_s25rbl``, ``smtp_session``) to build another arrangement. Anything missing
on the machine (root, ``ip netns``, ``postfix``, ``unbound``) raises ``LabUnavailable`` with the
precise reason; the test decides whether that skips or fails.

Names: every namespace, directory and file the lab makes is named ``s25t-<pid>-...``; a
later run removes those of runs whose process is gone (``cleanup_stale``), never those of a
run still alive, so parallel runs do not clash.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import TypeVar

from dnslib import QTYPE, DNSRecord

from tests.integration.server import RunningServer, attach, policy_section, store_url
from tests.support.fakedns import FakeAuthority

__all__ = [
    "BL_ZONE",
    "CLIENT_SUBNET",
    "DEPLOY_POSTFIX",
    "DEPLOY_POSTSCREEN",
    "HL_ZONE",
    "MX_IP",
    "PREFIX",
    "UPSTREAM_IP",
    "WL_ZONE",
    "LabUnavailable",
    "MailLab",
    "NetNamespace",
    "Postfix",
    "SmtpResult",
    "Unbound",
    "check_netns_support",
    "cleanup_stale",
    "deploy_postfix_files",
    "deploy_postscreen_snippet",
    "dns_query",
    "mail_lab",
    "require_program",
    "smtp_session",
    "start_reaper",
    "start_s25rbl",
    "veth_between",
    "wait_for",
    "write_s25rbl_config",
]

PREFIX = "s25t-"
BL_ZONE = "bl.s25rbl.test"
WL_ZONE = "wl.s25rbl.test"
HL_ZONE = "hl.s25rbl.test"
# The shipped examples use these names; the lab substitutes its own.
SHIPPED_ZONES = {
    "bl.s25r.example.org": BL_ZONE,
    "wl.s25r.example.org": WL_ZONE,
    "hl.s25r.example.org": HL_ZONE,
}
# TEST-NET-2, not TEST-NET-1: this host's own eth0 may sit on 192.0.2.0/24 (it does on the
# development VMs, with the default gateway at 192.0.2.1), and the lab must never be
# confusable with the host's network. Inside the namespaces any prefix would do.
CLIENT_SUBNET = "198.51.100.0/24"
MX_IP = "198.51.100.1"
UPSTREAM_IP = "198.51.100.254"
REVERSE_ZONE = "100.51.198.in-addr.arpa"
# Zones the fake authority answers for (unbound stub zones); pass more to mail_lab().
DEFAULT_UPSTREAM_ZONES = (REVERSE_ZONE, "ocn.ne.jp", "example.org", "example.net", "example.com")
S25RBL_PORT = 5300

REPO = Path(__file__).resolve().parents[2]
DEPLOY_POSTFIX = REPO / "deploy" / "postfix"
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")


class LabUnavailable(RuntimeError):
    """This machine cannot run the lab (not root, no netns, a program missing); says why."""


# --------------------------------------------------------------------------- small helpers


def require_program(name: str) -> str:
    """The path of ``name`` (sbin directories included), or ``LabUnavailable``."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)
    if path is None:
        raise LabUnavailable(f"{name} is not installed (Debian package: {_PACKAGES.get(name, name)})")
    return path


_PACKAGES = {"postfix": "postfix", "unbound": "unbound", "unbound-control": "unbound", "ip": "iproute2"}


def wait_for(probe: Callable[[], _T | None], timeout: float, what: str, interval: float = 0.05) -> _T:
    """Call ``probe`` until it returns something other than None/False; AssertionError at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _run(argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + _SBIN_PATH
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"({path}: {err})"
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------- namespaces


class NetNamespace:
    """A named network namespace (``ip netns``), created by ``create()``, gone after ``delete()``."""

    def __init__(self, name: str) -> None:
        if len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad namespace name {name!r}")
        self.name = name

    @property
    def etc(self) -> Path:
        """``/etc/netns/<name>``: files here replace /etc's for ``ip netns exec`` (resolv.conf)."""
        return Path("/etc/netns") / self.name

    def create(self) -> None:
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def ip(self, *args: str) -> str:
        """Run ``ip -n <name> ARGS`` and return its output."""
        return _run(["ip", "-n", self.name, *args]).stdout

    def add_address(self, interface: str, cidr: str) -> None:
        self.ip("addr", "add", cidr, "dev", interface)

    def set_resolv_conf(self, text: str) -> None:
        """The resolv.conf that processes started with ``exec``/``popen`` see."""
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(text)

    def argv(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside the namespace (``ip netns exec`` execs, no extra process)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it (bounded by ``timeout``)."""
        return _run(self.argv(*argv), timeout=timeout, check=check)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a long-running command inside the namespace (stdout+stderr piped, text mode)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
        env["PATH"] = env.get("PATH", "") + ":" + _SBIN_PATH
        env["PYTHONUNBUFFERED"] = "1"
        return subprocess.Popen(
            self.argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into the namespace for the block; sockets made there stay in it.

        Only the calling thread moves (setns(2) is per thread for network namespaces). Keep the
        block short and create sockets only, e.g.
        ``with ns.entered(): sock = socket.create_connection((MX_IP, 25), source_address=(ip, 0))``.
        """
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    def pids(self) -> list[int]:
        """Processes living in the namespace."""
        result = _run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in result.stdout.split() if p.isdigit()]

    def kill_all(self, timeout: float = 5) -> list[int]:
        """SIGTERM, then SIGKILL, every process left in the namespace; returns those found."""
        found = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.pids():
                break
        return found

    def delete(self) -> None:
        """Kill what is left inside, remove the namespace and its /etc/netns directory; idempotent."""
        if Path("/run/netns", self.name).exists():
            self.kill_all()
            _run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


def veth_between(a: NetNamespace, a_name: str, b: NetNamespace, b_name: str) -> None:
    """A veth pair with one end in each namespace, both up; never in the root namespace."""
    _run(
        [
            "ip",
            "link",
            "add",
            a_name,
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            b_name,
            "netns",
            b.name,
        ]
    )
    a.ip("link", "set", a_name, "up")
    b.ip("link", "set", b_name, "up")


def check_netns_support() -> None:
    """``LabUnavailable`` unless this process may create network namespaces."""
    if os.geteuid() != 0:
        raise LabUnavailable(
            f"ip netns needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); running as uid {os.geteuid()}"
        )
    require_program("ip")
    probe = NetNamespace(f"{PREFIX}{os.getpid()}-probe")
    try:
        result = _run(["ip", "netns", "add", probe.name], check=False)
        if result.returncode != 0:
            raise LabUnavailable(f"cannot create a network namespace: {result.stderr.strip()}")
    finally:
        probe.delete()


def cleanup_stale(prefix: str = PREFIX, tmp_root: Path = Path("/var/tmp")) -> list[str]:
    """Remove namespaces, /etc/netns entries and lab directories of lab runs that are gone.

    Names carry the creating process id (``<prefix><pid>-...``); those of a live process are
    left alone, so concurrent runs do not break each other. Returns what was removed.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed: list[str] = []
    names: set[str] = set()
    if Path("/run/netns").is_dir():
        names.update(p.name for p in Path("/run/netns").iterdir())
    if Path("/etc/netns").is_dir():
        names.update(p.name for p in Path("/etc/netns").iterdir())
    for name in sorted(names):
        match = pattern.match(name)
        if match and not _alive(int(match.group(1))):
            NetNamespace(name).delete()
            removed.append(name)
    if tmp_root.is_dir():
        for path in tmp_root.iterdir():
            match = pattern.match(path.name)
            if match and path.is_dir() and not _alive(int(match.group(1))):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    return removed


def start_reaper(limit: float = 4 * 3600) -> subprocess.Popen[bytes]:
    """A watchdog process that runs ``cleanup_stale`` once this process is gone.

    A test run killed with SIGKILL (or a crashed interpreter) cannot tear its lab down: the
    Postfix master, unbound and s25rbl would live on in their namespace. The watchdog notices
    within half a second and removes them; it exits by itself after ``limit`` seconds in any
    case. Stop it (``terminate()``) after a normal teardown.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.netns", "reap", str(os.getpid()), str(limit)],
        cwd=REPO,
        start_new_session=True,  # not killed with the test run's process group
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _reap(parent: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while _alive(parent):
        if time.monotonic() > deadline:
            return
        time.sleep(0.5)
    cleanup_stale()


# ---------------------------------------------------------------------------- s25rbl


def write_s25rbl_config(
    path: Path,
    *,
    listen: Sequence[str],
    upstream: tuple[str, int],
    db: Path | str,
    ttl: int = 300,
    negative_ttl: int = 1,
    extra: str = "",
    policy: str = "",
) -> Path:
    """A complete s25rbl TOML for the lab (zones ``*.s25rbl.test``, API on 127.0.0.1:0); ``db`` is
    a SQLite file path or a database URL, as for ``server.write_config``.

    ``negative_ttl`` is short by default so that unbound in front forgets "not listed" answers
    quickly: a whitelisting then shows within about a second instead of minutes. ``policy``
    is the body of the ``[policy]`` section (the policy service listens on a free port of
    127.0.0.1 unless it says where).
    """
    listen_list = ", ".join(f'"{item}"' for item in listen)
    path.write_text(
        f"""[dns]
listen = [{listen_list}]
zone = "{BL_ZONE}"
whitelist_zone = "{WL_ZONE}"
hostname_zone = "{HL_ZONE}"
nameservers = ["ns1.s25rbl.test"]
hostmaster = "hostmaster.s25rbl.test"
ttl = {ttl}
negative_ttl = {negative_ttl}
tempfail_ttl = 1
tcp_idle_timeout = 2

[resolver]
upstreams = ["{upstream[0]}:{upstream[1]}"]
timeout = 1.5

[database]
url = "{store_url(db)}"

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


def start_s25rbl(ns: NetNamespace, config: Path, timeout: float = 30) -> RunningServer:
    """``s25rbl --config CONFIG serve`` inside ``ns``; returns once DNS and API are listening.

    The result is a ``tests.integration.server.RunningServer``: ``.cli(...)`` runs the CLI
    against the same store (from the root namespace: the CLI needs only the database) and
    ``.stop()`` ends it. Its DNS and API addresses are reachable only inside ``ns``.
    """
    process = ns.popen([sys.executable, "-m", "s25rbl", "--config", str(config), "serve"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
    return attach(process, config, env, timeout)


# --------------------------------------------------------------------------- unbound

_QUERY_LINE = re.compile(r"info: (\S+) (\S+)\. (\S+) IN$")


class Unbound:
    """unbound in the foreground inside a namespace: a resolver with stub zones and a query log."""

    def __init__(
        self,
        ns: NetNamespace,
        directory: Path,
        stubs: Mapping[str, tuple[str, int]],
        listen: str = "127.0.0.1",
        port: int = 53,
    ) -> None:
        self.ns = ns
        self.directory = directory
        self.stubs = dict(stubs)
        self.listen = listen
        self.port = port
        self.config = directory / "unbound.conf"
        self.log = directory / "unbound.log"
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def render(self) -> str:
        """The configuration: stubs only, everything else refused, every query logged."""
        lines = [
            "server:",
            "    verbosity: 1",
            "    use-syslog: no",
            f'    logfile: "{self.log}"',
            "    log-queries: yes",
            "    log-servfail: yes",
            f'    directory: "{self.directory}"',
            '    chroot: ""',
            '    username: ""',
            f'    pidfile: "{self.directory / "unbound.pid"}"',
            "    do-daemonize: no",
            f"    interface: {self.listen}",
            f"    port: {self.port}",
            "    do-ip6: no",
            "    num-threads: 1",
            "    access-control: 127.0.0.0/8 allow",
            # No DNSSEC: the lab's zones are unsigned and no trust anchor is configured.
            '    module-config: "iterator"',
            "    qname-minimisation: yes",
            # s25rbl listens on 127.0.0.1; unbound refuses to query loopback by default.
            "    do-not-query-localhost: no",
            # Only the stub zones below are resolved; any other name is refused here, so no
            # query ever goes to the root servers (the namespace has no route there either).
            '    local-zone: "." refuse',
        ]
        for zone in self.stubs:
            # transparent: not refused (the most specific local-zone wins), and it replaces
            # unbound's built-in empty zone of the same name (RFC 6303 / 6761: test.,
            # 100.51.198.in-addr.arpa. ...).
            lines.append(f'    local-zone: "{zone}." transparent')
        lines += [
            "remote-control:",
            "    control-enable: yes",
            f'    control-interface: "{self.directory / "unbound.ctl"}"',
        ]
        for zone, (host, port) in self.stubs.items():
            lines += ["stub-zone:", f'    name: "{zone}."', f"    stub-addr: {host}@{port}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15) -> None:
        self.config.write_text(self.render())
        _run([require_program("unbound-checkconf"), str(self.config)])
        self.process = self.ns.popen([require_program("unbound"), "-d", "-c", str(self.config)])
        process = self.process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)

        threading.Thread(target=pump, name=f"unbound-{self.ns.name}", daemon=True).start()
        wait_for(
            lambda: process.poll() is not None or "start of service" in self.log_text(),
            timeout,
            "unbound to start",
        )
        if process.poll() is not None:
            raise AssertionError(
                f"unbound exited {process.returncode}:\n{''.join(self.output)}\n{self.log_text()}"
            )

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queries(self) -> list[tuple[str, str]]:
        """(name without trailing dot, type) of every query a client sent, oldest first."""
        found = []
        for line in self.log_text().splitlines():
            match = _QUERY_LINE.search(line)
            if match:
                found.append((match.group(2).lower(), match.group(3)))
        return found

    def control(self, *args: str, timeout: float = 10) -> str:
        """``unbound-control`` (``flush_zone NAME``, ``dump_infra`` ...) against this instance."""
        argv = [require_program("unbound-control"), "-c", str(self.config), *args]
        return self.ns.exec(*argv, timeout=timeout).stdout

    def servers_contacted(self) -> set[str]:
        """``addr@port`` of every upstream unbound has sent queries to (its infrastructure cache)."""
        return {line.split()[0] for line in self.control("dump_infra").splitlines() if line.strip()}

    def stop(self, timeout: float = 10) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()
        self.process = None


def dns_query(
    ns: NetNamespace, server: tuple[str, int], name: str, qtype: str = "A", timeout: float = 2
) -> DNSRecord:
    """One UDP query sent from inside ``ns`` (e.g. to check unbound or s25rbl there)."""
    request = DNSRecord.question(name, qtype)
    with ns.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.sendto(request.pack(), server)
        while True:
            data, _ = sock.recvfrom(65535)
            reply = DNSRecord.parse(data)
            if reply.header.id == request.header.id:
                return reply


# --------------------------------------------------------------------------- postfix


def deploy_postfix_files(rbl_reply_path: Path) -> tuple[str, str]:
    """(main.cf snippet, rbl_reply) from ``deploy/postfix``, zones and table path substituted.

    Fails loudly if the shipped files no longer contain what is substituted, so the tests
    notice when the examples change shape instead of silently testing something else.
    """
    snippet = (DEPLOY_POSTFIX / "main.cf.snippet").read_text()
    reply = (DEPLOY_POSTFIX / "rbl_reply").read_text()
    for shipped, ours in SHIPPED_ZONES.items():
        if shipped not in snippet:
            raise AssertionError(f"deploy/postfix/main.cf.snippet no longer mentions {shipped}")
        snippet = snippet.replace(shipped, ours)
        reply = reply.replace(shipped, ours)
    table = "texthash:/etc/postfix/rbl_reply"
    if table not in snippet:
        raise AssertionError(f"deploy/postfix/main.cf.snippet no longer uses {table}")
    snippet = snippet.replace(table, f"texthash:{rbl_reply_path}")
    return snippet, reply


# Every service smtpd and the queue manager need, none chrooted (the lab's paths are not in a
# chroot) and no outbound SMTP at all: mail for other domains fails on the error transport.
_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
# postscreen in front of smtpd, as Postfix's own master.cf has it commented out: postscreen
# takes the port, hands clients that pass to smtpd, and looks DNSBLs up through dnsblog.
_POSTSCREEN_SERVICES = """{listen} inet n       -       n       -       1       postscreen
smtpd     pass  -       -       n       -       -       smtpd
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
"""
DEPLOY_POSTSCREEN = DEPLOY_POSTFIX / "postscreen.cf.snippet"


def _master_cf(listen: str, postscreen: bool) -> str:
    if not postscreen:
        return _MASTER_CF.format(listen=listen)
    lines = _MASTER_CF.format(listen=listen).splitlines(keepends=True)
    smtpd = next(i for i, line in enumerate(lines) if line.startswith(listen))
    lines[smtpd] = _POSTSCREEN_SERVICES.format(listen=listen)
    return "".join(lines)


def deploy_postscreen_snippet() -> str:
    """``deploy/postfix/postscreen.cf.snippet`` with the lab's zones (loudly, as for main.cf)."""
    text = DEPLOY_POSTSCREEN.read_text()
    for shipped, ours in SHIPPED_ZONES.items():
        if shipped not in text and ours != HL_ZONE:
            raise AssertionError(f"deploy/postfix/postscreen.cf.snippet no longer mentions {shipped}")
        text = text.replace(shipped, ours)
    return text


class Postfix:
    """One Postfix instance with a private config, queue and log, its smtpd inside a namespace.

    ``main.cf`` is the lab's base settings followed by the shipped ``deploy/postfix`` snippet
    (zones substituted), then ``overrides`` applied with ``postconf -e`` (e.g. another
    ``smtpd_recipient_restrictions``). Local mail is accepted for ``@example.test`` (any local
    part) and delivered to ``discard:``, which logs ``status=sent``; nothing is ever relayed.
    ``postscreen=True`` puts postscreen on the port in front of smtpd and adds the shipped
    ``deploy/postfix/postscreen.cf.snippet`` to ``main.cf`` (before the overrides).
    """

    def __init__(
        self,
        ns: NetNamespace,
        directory: Path,
        listen: tuple[str, int] = (MX_IP, 25),
        overrides: Mapping[str, str] | None = None,
        postscreen: bool = False,
    ) -> None:
        self.ns = ns
        self.directory = directory
        self.listen = listen
        self.overrides = dict(overrides or {})
        self.postscreen = postscreen
        self.config_dir = directory / "etc"
        self.queue_dir = directory / "queue"
        self.data_dir = directory / "data"
        self.maillog = directory / "maillog"
        self.rbl_reply = self.config_dir / "rbl_reply"
        self.started = False

    def main_cf(self) -> str:
        snippet, _ = deploy_postfix_files(self.rbl_reply)
        base = f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = $myhostname
mydestination = example.test
local_recipient_maps =
local_transport = discard:delivered to the lab
default_transport = error:the lab sends no mail out
relay_transport = error:the lab sends no mail out
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
inet_interfaces = {self.listen[0]}
inet_protocols = ipv4
smtpd_helo_required = yes
smtpd_banner = $myhostname ESMTP lab
smtputf8_enable = no
biff = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.directory}
# smtpd keeps every DNSBL/DNSWL answer for its whole life (up to max_use sessions, or until
# max_idle): a list change would reach a reused smtpd process only after it exits. One
# session per process makes each session ask afresh, as a retry minutes later would.
max_use = 1
# Say which permit decided, too (e.g. permit_dnswl_client).
smtpd_log_access_permit_actions = static:all
"""
        text = base + "\n# ---- deploy/postfix/main.cf.snippet (zones substituted) ----\n" + snippet
        if self.postscreen:
            text += "\n# ---- deploy/postfix/postscreen.cf.snippet (zones substituted) ----\n"
            text += deploy_postscreen_snippet()
        return text

    def postconf(self, *args: str) -> str:
        return _run([require_program("postconf"), "-c", str(self.config_dir), *args]).stdout

    def start(self, timeout: float = 30) -> None:
        require_program("postfix")
        # Postfix daemons (user postfix) must be able to reach the queue: no 0700 parents.
        for path in (self.directory, self.config_dir, self.queue_dir, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)
        owner = pwd.getpwnam("postfix")
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)  # master.lock and caches live there
        _, reply = deploy_postfix_files(self.rbl_reply)
        self.rbl_reply.write_text(reply)
        (self.config_dir / "main.cf").write_text(self.main_cf())
        listen = f"{self.listen[0]}:{self.listen[1]}"
        (self.config_dir / "master.cf").write_text(_master_cf(listen, self.postscreen))
        for name, value in self.overrides.items():
            self.postconf("-e", f"{name}={value}")
        postfix = require_program("postfix")
        # Creates the queue's subdirectories with Postfix's owners and modes. Inside the
        # namespace: Postfix refuses an inet_interfaces address that is not local.
        check = self.ns.exec(postfix, "-c", str(self.config_dir), "check", timeout=timeout, check=False)
        if check.returncode != 0:
            raise AssertionError(f"postfix check failed: {check.stderr}\n{self.log_tail()}")
        start = self.ns.exec(postfix, "-c", str(self.config_dir), "start", timeout=timeout, check=False)
        if start.returncode != 0:
            raise AssertionError(f"postfix start failed: {start.stderr}\n{self.log_tail()}")
        self.started = True
        # ``postfix start`` returns once the master has opened its listening sockets.
        wait_for(
            lambda: self.master_pid() is not None and "daemon started" in self.log_text(),
            timeout,
            f"the Postfix master to start\n{self.log_tail()}",
        )

    def master_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def stop(self, timeout: float = 20) -> None:
        """``postfix stop`` and wait for the master to go; SIGKILL it if it does not."""
        if not self.started:
            return
        pid = self.master_pid()
        self.ns.exec(
            require_program("postfix"), "-c", str(self.config_dir), "stop", timeout=timeout, check=False
        )
        deadline = time.monotonic() + timeout
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.started = False

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return f"--- Postfix maillog tail ({self.maillog}):\n{_tail(self.maillog, lines)}"

    def wait_for_log(self, pattern: str, timeout: float = 10, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` (a regex) in the maillog past offset ``after``.

        Postfix logs through postlogd, a moment after the SMTP reply: poll, bounded.
        """
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return wait_for(lambda: regex.search(self.log_text(), after), timeout, f"/{pattern}/ in maillog")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.log_tail()}") from None

    def log_size(self) -> int:
        """The maillog's current length: pass as ``after`` to look only at newer lines."""
        return len(self.log_text())


# --------------------------------------------------------------------------------- SMTP

Reply = tuple[int, str]


@dataclass
class SmtpResult:
    """The replies of one SMTP session (``None`` where the command was not sent)."""

    source: str
    banner: Reply | None = None
    helo: Reply | None = None
    mail: Reply | None = None
    rcpt: list[Reply] = field(default_factory=list)
    data: Reply | None = None
    error: str | None = None

    @property
    def queue_id(self) -> str | None:
        """Postfix's queue id from ``250 2.0.0 Ok: queued as ID``."""
        if self.data is None:
            return None
        match = re.search(r"queued as (\w+)", self.data[1])
        return match.group(1) if match else None

    def transcript(self) -> str:
        parts = [f"client {self.source}"]
        for label, reply in (("banner", self.banner), ("HELO", self.helo), ("MAIL", self.mail)):
            if reply is not None:
                parts.append(f"{label}: {reply[0]} {reply[1]}")
        parts += [f"RCPT: {code} {text}" for code, text in self.rcpt]
        if self.data is not None:
            parts.append(f"DATA: {self.data[0]} {self.data[1]}")
        if self.error:
            parts.append(f"error: {self.error}")
        return "\n".join(parts)


def smtp_session(
    ns: NetNamespace,
    source: str,
    server: tuple[str, int],
    *,
    helo: str,
    sender: str,
    recipients: Sequence[str],
    body: str | None = "Hello from the s25rbl lab.\n",
    timeout: float = 20,
) -> SmtpResult:
    """One SMTP session from ``source`` (an address in ``ns``): HELO, MAIL, RCPT..., DATA, QUIT.

    DATA is sent only when ``body`` is given and some recipient was accepted. Protocol errors
    are recorded in ``error``, not raised, so a test can show the whole transcript.
    """
    result = SmtpResult(source)
    # local_hostname given: smtplib would otherwise look up this host's FQDN (root namespace).
    client = smtplib.SMTP(local_hostname=helo, timeout=timeout, source_address=(source, 0))
    try:
        with ns.entered():
            client.sock = socket.create_connection(server, timeout, (source, 0))
        client.file = None
        code, text = client.getreply()
        result.banner = (code, text.decode(errors="replace"))
        code, text = client.helo(helo)
        result.helo = (code, text.decode(errors="replace"))
        code, text = client.mail(sender)
        result.mail = (code, text.decode(errors="replace"))
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            result.rcpt.append((code, text.decode(errors="replace")))
        if body is not None and any(code == 250 for code, _ in result.rcpt):
            message = EmailMessage()
            message["From"] = sender
            message["To"] = ", ".join(recipients)
            message["Subject"] = "s25rbl lab"
            message["Message-ID"] = make_msgid(domain="lab.example.org")
            message.set_content(body)
            try:
                code, text = client.data(message.as_bytes())
                result.data = (code, text.decode(errors="replace"))
            except smtplib.SMTPDataError as err:
                error = err.smtp_error
                reason = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
                result.data = (err.smtp_code, reason)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    except (smtplib.SMTPException, OSError) as err:
        result.error = f"{type(err).__name__}: {err}"
    finally:
        client.close()
    return result


# ------------------------------------------------------------------------------ the lab


@dataclass
class MailLab:
    """Everything ``mail_lab()`` started; see the module docstring for the picture."""

    tag: str
    directory: Path
    mx: NetNamespace
    net: NetNamespace
    upstream: FakeAuthority
    s25rbl: RunningServer
    unbound: Unbound
    postfix: Postfix
    store: str = ""  # s25rbl's database URL
    _clients: set[str] = field(default_factory=set)
    _extra: list[Postfix] = field(default_factory=list)
    _nodes: list[RunningServer] = field(default_factory=list)

    def add_client(self, ip: str, name: str | None = None, *, confirmed: bool = True) -> str:
        """Give the "internet" namespace the address ``ip`` and (optionally) its DNS.

        ``name``: the PTR name served by the fake authority; ``confirmed``: its A record
        points back at ``ip`` (forward-confirmed). No name: no PTR at all (S25R rule 0).
        """
        if ip not in self._clients:
            self.net.add_address("net0", f"{ip}/24")
            self._clients.add(ip)
        if name is not None:
            self.upstream.add_ptr(ip, name)
            if confirmed:
                self.upstream.add_host(name, ip)
        return ip

    def smtp(
        self,
        source: str,
        *,
        helo: str,
        sender: str = "sender@example.org",
        recipients: Sequence[str] = ("user@example.test",),
        body: str | None = "Hello from the s25rbl lab.\n",
        port: int = 25,
        timeout: float = 20,
    ) -> SmtpResult:
        """An SMTP session from the client address ``source`` to the MX (``MX_IP:port``)."""
        return smtp_session(
            self.net,
            source,
            (MX_IP, port),
            helo=helo,
            sender=sender,
            recipients=recipients,
            body=body,
            timeout=timeout,
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The s25rbl CLI on the lab's store (``entries add white ip ...``)."""
        return self.s25rbl.cli(*args, timeout=timeout)

    def extra_postfix(
        self, name: str, port: int, overrides: Mapping[str, str], *, postscreen: bool = False
    ) -> Postfix:
        """Another Postfix instance in the MX namespace on ``MX_IP:port`` with ``overrides``.

        Stopped with the lab. Lets a test try a variant of the shipped configuration without
        touching the main instance the other tests use.
        """
        instance = Postfix(
            self.mx, self.directory / name, listen=(MX_IP, port), overrides=overrides, postscreen=postscreen
        )
        self._extra.append(instance)
        instance.start()
        return instance

    def add_s25rbl(self, name: str, *, policy: str = "", extra: str = "") -> RunningServer:
        """Another s25rbl node in the MX namespace on the lab's store (another node of the
        organisation), DNS and API on free ports, its policy service as ``policy`` says (a free
        port unless it says where: ``.policy``). Stopped with the lab."""
        config = write_s25rbl_config(
            self.directory / f"{name}.toml",
            listen=["127.0.0.1:0"],
            upstream=(UPSTREAM_IP, self.upstream.port),
            db=self.store,
            extra=extra,
            policy=policy,
        )
        node = start_s25rbl(self.mx, config)
        self._nodes.append(node)
        return node

    @property
    def extra_instances(self) -> list[Postfix]:
        """The Postfix instances started with ``extra_postfix``, oldest first."""
        return list(self._extra)

    def diagnostics(self, lines: int = 60) -> str:
        """Postfix logs, unbound's and s25rbl's output: for assertion messages."""
        parts = [p.log_tail(lines) for p in (self.postfix, *self._extra)]
        parts.append(f"--- unbound log tail:\n{_tail(self.unbound.log, lines)}")
        parts.append("--- s25rbl output tail:\n" + "".join(self.s25rbl.output[-lines:]))
        return "\n".join(parts)


@contextlib.contextmanager
def mail_lab(
    *,
    upstream_zones: Sequence[str] = DEFAULT_UPSTREAM_ZONES,
    s25rbl_extra: str = "",
    s25rbl_policy: str = "",
    postfix_overrides: Mapping[str, str] | None = None,
    database_url: str | None = None,
    start_postfix: bool = True,
) -> Iterator[MailLab]:
    """Build the whole lab, yield it, and tear everything down again, also on errors.

    s25rbl's store is a SQLite file in the lab's directory unless ``database_url`` names
    another (a PostgreSQL reached over its Unix socket: the namespace has its own loopback).
    ``start_postfix=False`` leaves Postfix out (``lab.postfix`` is then never started), for
    tests of another MTA in the same lab (``tests/integration/exim.py``). ``s25rbl_policy`` is
    the body of s25rbl's ``[policy]`` section (its policy service listens on a free port of the
    MX namespace's 127.0.0.1 unless it says where: ``lab.s25rbl.policy``).

    Raises ``LabUnavailable`` (before creating anything) when the machine cannot run it.
    """
    check_netns_support()
    programs = ("postfix", "postconf") if start_postfix else ()
    for program in (*programs, "unbound", "unbound-control", "unbound-checkconf"):
        require_program(program)
    cleanup_stale()
    tag = f"{PREFIX}{os.getpid()}-{next(_COUNTER)}"
    with contextlib.ExitStack() as stack:
        reaper = start_reaper()
        stack.callback(reaper.wait, 10)
        stack.callback(reaper.terminate)
        directory = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/var/tmp"))
        directory.chmod(0o755)
        stack.callback(shutil.rmtree, directory, True)
        mx, net = NetNamespace(f"{tag}-mx"), NetNamespace(f"{tag}-net")
        for ns in (mx, net):
            stack.callback(ns.delete)
            ns.create()
        veth_between(mx, "mx0", net, "net0")
        mx.add_address("mx0", f"{MX_IP}/24")
        net.add_address("net0", f"{UPSTREAM_IP}/24")
        mx.set_resolv_conf(
            "# s25rbl lab: unbound inside this namespace\nnameserver 127.0.0.1\noptions timeout:2\n"
        )

        upstream = FakeAuthority(host=UPSTREAM_IP)
        with net.entered():
            upstream.start()
        stack.callback(upstream.stop)

        config = write_s25rbl_config(
            directory / "s25rbl.toml",
            listen=[f"127.0.0.1:{S25RBL_PORT}"],
            upstream=(UPSTREAM_IP, upstream.port),
            db=database_url or directory / "s25rbl.db",
            extra=s25rbl_extra,
            policy=s25rbl_policy,
        )
        s25rbl = start_s25rbl(mx, config)
        stack.callback(s25rbl.stop)

        stubs = {zone: ("127.0.0.1", S25RBL_PORT) for zone in (BL_ZONE, WL_ZONE, HL_ZONE)}
        stubs.update({zone: (UPSTREAM_IP, upstream.port) for zone in upstream_zones})
        unbound = Unbound(mx, directory / "unbound", stubs)
        unbound.directory.mkdir()
        stack.callback(unbound.stop)
        unbound.start()
        # The whole chain answers: unbound -> s25rbl (RFC 5782 test entry).
        reply = dns_query(mx, ("127.0.0.1", 53), f"2.0.0.127.{BL_ZONE}")
        if [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A] != ["127.0.0.2"]:
            raise AssertionError(f"unbound -> s25rbl does not answer the test entry:\n{reply}")

        postfix = Postfix(mx, directory / "postfix", overrides=postfix_overrides)
        store = database_url or store_url(directory / "s25rbl.db")
        lab = MailLab(tag, directory, mx, net, upstream, s25rbl, unbound, postfix, store)

        def stop_extra() -> None:
            for instance in reversed(lab._extra):
                instance.stop()
            for node in reversed(lab._nodes):
                node.stop()

        stack.callback(stop_extra)
        stack.callback(postfix.stop)
        if start_postfix:
            postfix.start()
        yield lab


def _counter() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_COUNTER = _counter()


if __name__ == "__main__":
    # ``python -m tests.integration.netns reap PID LIMIT``: the watchdog of start_reaper().
    if len(sys.argv) == 4 and sys.argv[1] == "reap":
        _reap(int(sys.argv[2]), float(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.integration.netns reap PID LIMIT")
