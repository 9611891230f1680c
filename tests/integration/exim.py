"""A real Exim in the mail lab (``tests/integration/netns.py``): a daemon running an ACL under test.

Debian's exim4 packages conflict with Postfix (both provide mail-transport-agent), so Exim is
never installed: ``scripts/unpack-exim.sh`` (run by ``scripts/test.sh``) unpacks the
``exim4-daemon-light`` package into ``.cache/exim`` and creates the system user it looks up
(``Debian-exim``). ``S25RBL_TEST_EXIM`` names another binary instead. Anything missing raises
``LabUnavailable`` with the reason; the test decides whether that skips or fails.

``Exim`` starts one daemon (``exim -C CONFIG -bdf``, as root, in the foreground) inside the
site's namespace, listening on a port of the site's address. Its configuration is generated
(``Exim.render``): its own spool and logs under the given directory, no TLS, and one RCPT ACL::

    acl_check_rcpt:
      deny    !domains = +local_domains     # no relaying, before the ACL under test
      .include <the ACL under test>         # e.g. deploy/exim/s25rbl.acl, zones substituted
      accept

Mail for ``@example.test`` that passes is delivered to ``:blackhole:`` (logged as
``=> :blackhole:``); nothing is ever sent out. Exim's own DNS lookups (the client's name,
every ``dnslists`` query) go through the namespace's resolv.conf to the lab's unbound, so
``Unbound.queries`` shows them, as for Postfix. With the default ``host_lookup = *`` Exim
looks every client's name up at connect time; ``host_lookup=None`` leaves that to the
first reference to ``$sender_host_name``.

For an ACL that asks a Postfix-style policy service (``${readsocket{inet:HOST:PORT}{...}}``),
``PolicyStub`` stands in for the service inside the namespace and records what Exim sent;
pass its port to the ACL through ``macros`` (see ``tests/integration/test_exim.py``).

Typical use::

    with mail_lab(start_postfix=False) as lab, Exim(lab.mx, lab.directory / "exim", shipped_acl()) as exim:
        result = lab.smtp(client_ip, helo="mail.example.org", port=exim.port)
        exim.wait_for_log(r"temporarily rejected RCPT", log="reject")
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from tests.integration.netns import (
    MX_IP,
    REPO,
    SHIPPED_ZONES,
    LabUnavailable,
    NetNamespace,
    wait_for,
)

__all__ = [
    "DEPLOY_EXIM_ACL",
    "EXIM_CACHE",
    "EXIM_ENV",
    "Exim",
    "LogName",
    "PolicyStub",
    "acl_statements",
    "exim_user",
    "find_exim",
    "policy_request",
    "shipped_acl",
    "without_statement",
]

EXIM_ENV = "S25RBL_TEST_EXIM"
EXIM_CACHE = REPO / ".cache" / "exim"
DEPLOY_EXIM_ACL = REPO / "deploy" / "exim" / "s25rbl.acl"
LogName = Literal["main", "reject", "panic"]


def find_exim() -> str:
    """The Exim binary the tests run: ``$S25RBL_TEST_EXIM``, else the unpacked package.

    ``LabUnavailable`` (saying what to run) when there is none or it cannot start, e.g.
    because the user it was built to run as does not exist.
    """
    binary = os.environ.get(EXIM_ENV) or str(EXIM_CACHE / "usr" / "sbin" / "exim4")
    if not os.access(binary, os.X_OK):
        if os.environ.get(EXIM_ENV):
            raise LabUnavailable(f"{EXIM_ENV}={binary} is not an executable file")
        raise LabUnavailable(
            f"Exim is not unpacked at {binary} (scripts/unpack-exim.sh, run by scripts/test.sh, "
            f"does it; or set {EXIM_ENV})"
        )
    exim_user(binary)
    return binary


def exim_user(binary: str) -> pwd.struct_passwd:
    """The user ``binary`` runs the processes that take messages as (compiled in)."""
    argv = [binary, "-C", "/dev/null", "-bP", "exim_user"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except OSError as err:
        raise LabUnavailable(f"{binary} does not run: {err}") from None
    if result.returncode != 0:
        # Debian's binary looks its user up before anything else; exim4-base would create it.
        raise LabUnavailable(
            f"{binary} does not run: {result.stderr.strip() or result.stdout.strip()} "
            f"(scripts/unpack-exim.sh creates the Debian-exim user Debian's binary needs)"
        )
    name = result.stdout.partition("=")[2].strip()
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise LabUnavailable(f"{binary} runs as the user {name!r}, which does not exist") from None


def shipped_acl(path: Path = DEPLOY_EXIM_ACL, replacements: Mapping[str, str] | None = None) -> str:
    """A shipped ACL file with ``replacements`` made (default: the lab's zones for the shipped ones).

    Fails loudly when the file no longer contains a string that is replaced, so the tests
    notice when the example changes shape instead of silently testing something else.
    """
    text = path.read_text()
    for shipped, ours in (SHIPPED_ZONES if replacements is None else replacements).items():
        if shipped not in text:
            raise AssertionError(f"{path.relative_to(REPO)} no longer mentions {shipped}")
        text = text.replace(shipped, ours)
    return text


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"({path}: {err})"


class Exim:
    """One Exim daemon with a generated configuration, its own spool and logs, inside ``ns``.

    ``acl``: the text included in the RCPT ACL after the relay check (``shipped_acl()``).
    ``macros``: ``NAME = value`` definitions at the top of the configuration (names start
    with an upper-case letter), e.g. a policy service's port for the ACL to use.
    ``main``: more main-section options, appended after the lab's own.
    ``data_acl``: text for a DATA ACL (``acl_smtp_data``, after the message is in), followed by
    ``accept``; none by default.
    A context manager: ``with Exim(...) as exim`` starts it and stops it again.
    """

    def __init__(
        self,
        ns: NetNamespace,
        directory: Path,
        acl: str,
        *,
        listen: tuple[str, int] = (MX_IP, 2525),
        host_lookup: str | None = "*",
        macros: Mapping[str, str] | None = None,
        main: str = "",
        data_acl: str | None = None,
    ) -> None:
        self.ns = ns
        self.directory = directory
        self.acl = acl
        self.listen = listen
        self.host_lookup = host_lookup
        self.macros = dict(macros or {})
        self.main = main
        self.config = directory / "exim.conf"
        self.acl_file = directory / "acl_under_test"
        self.data_acl = data_acl
        self.data_acl_file = directory / "data_acl_under_test"
        self.spool = directory / "spool"
        self.log_dir = directory / "log"
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def port(self) -> int:
        return self.listen[1]

    def render(self, binary: str) -> str:
        """The whole configuration file."""
        macros = "".join(f"{name} = {value}\n" for name, value in self.macros.items())
        host_lookup = f"host_lookup = {self.host_lookup}" if self.host_lookup is not None else "host_lookup ="
        data_option, data_section = "", ""
        if self.data_acl is not None:
            data_option = "acl_smtp_data = acl_check_data"
            data_section = f"""
acl_check_data:
# ---- the DATA ACL under test ----
.include {self.data_acl_file}
# ---- end of the DATA ACL under test ----
  accept
"""
        return f"""\
# Generated by tests/integration/exim.py for one lab run.
{macros}
exim_path = {binary}
keep_environment =
primary_hostname = mx.example.test
qualify_domain = example.test
domainlist local_domains = example.test
spool_directory = {self.spool}
log_file_path = {self.log_dir}/%slog
message_logs = false
local_interfaces = <; {self.listen[0]}
daemon_smtp_ports = {self.listen[1]}
disable_ipv6 = true
{host_lookup}
tls_advertise_hosts =
smtp_banner = $primary_hostname ESMTP Exim lab
log_selector = +smtp_connection +received_recipients +incoming_port
acl_smtp_rcpt = acl_check_rcpt
{data_option}
# Deliver as the Exim user in the process that took the message: no re-exec of the binary,
# which would lose the privilege a -C configuration has (and say so in the paniclog).
deliver_drop_privilege = true
{self.main}

begin acl

acl_check_rcpt:
  # No relaying, before the ACL under test: its "accept" must not open a relay.
  deny    message       = relay not permitted
          !domains      = +local_domains
# ---- the ACL under test ----
.include {self.acl_file}
# ---- end of the ACL under test ----
  accept
{data_section}
begin routers

blackhole:
  driver        = redirect
  domains       = +local_domains
  data          = :blackhole:
"""

    def start(self, timeout: float = 15) -> None:
        binary = find_exim()
        owner = exim_user(binary)
        # The daemon runs as root; the processes that take a message run as the Exim user and
        # must traverse the lab's directories, write the logs and the spool, read the config.
        for path in (self.directory, self.spool, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)
        for path in (self.spool, self.log_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        # Exim refuses a configuration that others (or a group) may write.
        files = [(self.acl_file, self.acl), (self.config, self.render(binary))]
        if self.data_acl is not None:
            files.append((self.data_acl_file, self.data_acl))
        for path, text in files:
            path.write_text(text)
            path.chmod(0o644)
        check = self.ns.exec(binary, "-C", str(self.config), "-bV", check=False, timeout=timeout)
        if check.returncode != 0:
            raise AssertionError(f"Exim rejects its configuration:\n{check.stdout}{check.stderr}")
        process = self.ns.popen([binary, "-C", str(self.config), "-bdf"])
        self.process = process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)

        threading.Thread(target=pump, name=f"exim-{self.port}", daemon=True).start()
        wait_for(
            lambda: process.poll() is not None or "daemon started" in self.log_text(),
            timeout,
            f"the Exim daemon to start\n{self.diagnostics()}",
        )
        if process.poll() is not None:
            raise AssertionError(f"the Exim daemon exited {process.returncode}\n{self.diagnostics()}")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the daemon (SIGKILL if it lingers); the processes it forked end by themselves."""
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

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------- logs

    def log_path(self, log: LogName = "main") -> Path:
        return self.log_dir / f"{log}log"

    def log_text(self, log: LogName = "main") -> str:
        try:
            return self.log_path(log).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self, log: LogName = "main") -> int:
        """The log's current length: pass as ``after`` to look only at newer lines."""
        return len(self.log_text(log))

    def wait_for_log(
        self, pattern: str, log: LogName = "main", after: int = 0, timeout: float = 10
    ) -> re.Match[str]:
        """The first match of ``pattern`` (a regex, multiline) in a log past offset ``after``.

        Deliveries are logged by a process of their own a moment after the SMTP reply: poll.
        """
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return wait_for(
                lambda: regex.search(self.log_text(log), after), timeout, f"/{pattern}/ in the {log}log"
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.diagnostics()}") from None

    def diagnostics(self, lines: int = 40) -> str:
        """The logs' tails and the daemon's output: for assertion messages."""
        parts = [f"--- Exim {log}log tail:\n{_tail(self.log_path(log), lines)}" for log in ("main", "reject")]
        if self.log_path("panic").exists():
            parts.append(f"--- Exim paniclog:\n{_tail(self.log_path('panic'), lines)}")
        if self.output:
            parts.append("--- Exim daemon output:\n" + "".join(self.output[-lines:]))
        return "\n".join(parts)


# ------------------------------------------------------------------ a policy service stub


def policy_request(attributes: Mapping[str, str]) -> str:
    """A Postfix policy-delegation request as the request argument of Exim's ``${readsocket}``.

    ``name=value`` lines and the empty line that ends a request, with newlines written as
    ``\\n`` (the expansion turns them into newlines). Values are Exim expansions
    (``$sender_host_address``); nothing escapes a newline inside a value.
    """
    return "".join(f"{name}={value}\\n" for name, value in attributes.items()) + "\\n"


class PolicyStub:
    """A scripted stand-in for a Postfix-style policy service, listening inside a namespace.

    Speaks the policy-delegation protocol: reads ``name=value`` lines up to an empty line,
    records the request (``requests``, oldest first) and answers ``action=<answer(request)>``
    and an empty line (``answer`` runs in the stub's threads). Like a real policy service it
    then waits on the same connection for the next request and closes only at end of file.

    Exim's ``${readsocket}`` reads the answer until the connection closes, so it relies on its
    default shutdown of its sending side after the request (the service sees end of file at
    once); with ``{5s:shutdown=no}`` every lookup waits the 5 s and yields its failure string
    instead (tested).

    Listens on ``host:port`` inside ``ns``: the port an ACL under test names (the namespace
    has a loopback of its own, so no clash), or with ``port=0`` any free one, to hand to the
    ACL through ``Exim(macros=...)`` or ``shipped_acl(replacements=...)``. A context manager.
    """

    def __init__(
        self,
        ns: NetNamespace,
        answer: Callable[[dict[str, str]], str] = lambda _request: "DUNNO",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.ns = ns
        self.answer = answer
        self.host = host
        self.port = port  # 0: any free port, known after start()
        self.requests: list[dict[str, str]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self.ns.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(16)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="policy-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def received(self) -> list[dict[str, str]]:
        """A copy of the requests so far."""
        with self._lock:
            return [dict(request) for request in self.requests]

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._converse, args=(conn,), daemon=True).start()

    def _converse(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn, conn.makefile("rwb") as stream:
            request: dict[str, str] = {}
            try:
                for raw in stream:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if line:
                        name, _, value = line.partition("=")
                        request[name] = value
                        continue
                    with self._lock:
                        self.requests.append(dict(request))
                    stream.write(f"action={self.answer(request)}\n\n".encode())
                    stream.flush()
                    request = {}
            except OSError:
                return


# ------------------------------------------------------------------------------ ACL text

_VERB = re.compile(r"^\s+(accept|defer|deny|discard|drop|require|warn)\b")


def acl_statements(text: str) -> list[str]:
    """The statements of an ACL fragment, each a verb line with its condition lines.

    Comment and blank lines belong to the statement they precede; trailing ones to the last.
    """
    statements: list[str] = []
    current: list[str] = []  # the statement being read, from its leading comments on
    gap: list[str] = []  # comments and blank lines since its last line
    for line in text.splitlines(keepends=True):
        if not line.strip() or line.lstrip().startswith("#"):
            gap.append(line)
        elif _VERB.match(line) and any(_VERB.match(seen) for seen in current):
            statements.append("".join(current))
            current, gap = [*gap, line], []
        else:
            current += [*gap, line]
            gap = []
    if current or gap:
        statements.append("".join(current + gap))
    return statements


def without_statement(text: str, marker: str) -> str:
    """The ACL fragment less the one statement that contains ``marker`` (AssertionError if not one)."""
    statements = acl_statements(text)
    hits = [index for index, statement in enumerate(statements) if marker in statement]
    if len(hits) != 1:
        raise AssertionError(f"{len(hits)} ACL statements contain {marker!r}:\n{text}")
    return "".join(statement for index, statement in enumerate(statements) if index != hits[0])
