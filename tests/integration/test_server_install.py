"""README.md "Deploy on a server", followed into a scratch root inside a network namespace.

The test builds the wheel, installs it as the README says (``python3 -m venv /opt/s25rbl``,
``pip install '<wheel>[fast]'``, a link in ``/usr/local/bin``), copies ``deploy/s25rbl.toml``
and ``deploy/unbound/s25rbl.conf`` where the README puts them, and starts what the shipped
unit's ``ExecStart`` says, with the environment systemd gives it (``STATE_DIRECTORY``). Every
absolute path of the layout is moved under the scratch root; nothing else is changed: s25rbl
listens on 127.0.0.1:5300 and asks 127.0.0.1:53 as shipped, and unbound (on 127.0.0.1:53 of
the namespace, running the shipped snippet through ``include:``) sends the zones to it.

Not emulated: systemd itself (its sandboxing) and the ``s25rbl`` user (the test runs as
root). Nothing is downloaded: ``pip install --no-index`` finds the wheel's dependencies
already installed, because the scratch virtualenv sees the test environment's packages
(s25rbl itself left out) through a ``.pth`` file; the installed ``s25rbl`` must be the wheel's.

Needs root, ``ip netns`` and unbound: without them the tests skip, or fail when
``S25RBL_CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.integration.netns import (
    PREFIX,
    REPO,
    REVERSE_ZONE,
    LabUnavailable,
    NetNamespace,
    Unbound,
    check_netns_support,
    cleanup_stale,
    dns_query,
    require_program,
    start_reaper,
    wait_for,
)
from tests.integration.server import RunningServer, attach
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.interop

README = REPO / "README.md"
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "s25rbl.service"
BL, WL = "bl.s25r.example.org", "wl.s25r.example.org"  # the shipped zones, kept as they are

# Documentation addresses inside the namespace (the lab's reverse zone is TEST-NET-2).
DYNAMIC = ("198.51.100.7", "p1234-ipad12.tokyo.ocn.ne.jp")  # S25R rule 1, forward-confirmed
PARTNER = ("198.51.100.25", "p5678-ipad34.osaka.ocn.ne.jp")  # rule 1 too, whitelisted with the CLI
BLOCKED = "198.51.100.99"  # blacklisted through the API

# The README's commands, as the test mirrors them (checked to be in the README, word for word).
README_COMMANDS = (
    "python3 -m venv /opt/s25rbl",
    '/opt/s25rbl/bin/pip install "$(ls ./dist/s25rbl-0.1.0-*.whl)[fast]"',
    "ln -s /opt/s25rbl/bin/s25rbl /usr/local/bin/s25rbl",
    "s25rbl man > /usr/local/share/man/man1/s25rbl.1",
    "s25rbl completion bash > /etc/bash_completion.d/s25rbl",
    "install -m 0640 -g s25rbl deploy/s25rbl.toml /etc/s25rbl/s25rbl.toml",
    "install -m 0644 deploy/systemd/s25rbl.service /etc/systemd/system/",
    "install -m 0644 deploy/unbound/s25rbl.conf /etc/unbound/unbound.conf.d/",
    "sudo -u s25rbl s25rbl --config /etc/s25rbl/s25rbl.toml entries add white ip",
    "s25rbl entries list --api http://127.0.0.1:8300 --token TOKEN",
    "sudo -u s25rbl s25rbl --config /etc/s25rbl/s25rbl.toml migrate",
)
# Where the README's absolute paths live inside the scratch root.
MOVED = ("/opt/s25rbl", "/usr/local/bin", "/etc/s25rbl", "/var/lib/s25rbl", "/etc/unbound")


def _ci_or_skip(message: str) -> None:
    if os.environ.get("S25RBL_CI"):
        pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
    pytest.skip(message)


@dataclass
class Site:
    """The installed server: scratch root, namespace, unbound, and the running unit."""

    root: Path
    ns: NetNamespace
    wheel: Path
    env: dict[str, str]
    unbound: Unbound | None = None
    server: RunningServer | None = None

    def path(self, absolute: str) -> Path:
        """Where ``absolute`` (a path of the README's layout) is in the scratch root."""
        return self.root / absolute.lstrip("/")

    def moved(self, text: str) -> str:
        for prefix in MOVED:
            text = text.replace(prefix, str(self.path(prefix)))
        return text

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command inside the namespace, in a root shell's environment (no PYTHONPATH), from /."""
        return subprocess.run(
            self.ns.argv(*argv), capture_output=True, text=True, env=self.env, timeout=timeout, cwd="/"
        )

    def s25rbl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``s25rbl --config /etc/s25rbl/s25rbl.toml ARGS``, the README's CLI on the server."""
        return self.run(
            str(self.path("/usr/local/bin/s25rbl")),
            "--config",
            str(self.path("/etc/s25rbl/s25rbl.toml")),
            *args,
        )

    def start_unit(self) -> RunningServer:
        """The shipped unit's ExecStart, with the environment systemd gives it."""
        text = UNIT.read_text()
        exec_start = re.search(r"^ExecStart=(.+)$", text, re.MULTILINE)
        state = re.search(r"^StateDirectory=(\S+)$", text, re.MULTILINE)
        assert exec_start and state, "the unit lost its ExecStart or StateDirectory"
        state_dir = self.path(f"/var/lib/{state.group(1)}")
        state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        env = {**self.env, "STATE_DIRECTORY": str(state_dir)}
        argv = shlex.split(self.moved(exec_start.group(1)))
        process = subprocess.Popen(  # systemd's default WorkingDirectory is /
            self.ns.argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd="/"
        )
        self.server = attach(process, Path(argv[argv.index("--config") + 1]), env, timeout=60)
        return self.server

    def ask(self, name: str, qtype: str = "A", server: tuple[str, int] = ("127.0.0.1", 53)) -> DNSRecord:
        return dns_query(self.ns, server, name, qtype, timeout=5)


class SiteUnbound(Unbound):
    """The lab's unbound (stub zones for the test clients' DNS) with the shipped snippet included."""

    def __init__(self, ns: NetNamespace, directory: Path, stubs: dict[str, tuple[str, int]], snippet: Path):
        super().__init__(ns, directory, stubs, listen="127.0.0.1", port=53)
        self.snippet = snippet

    def render(self) -> str:
        return super().render() + f'\n# ---- as installed ----\ninclude: "{self.snippet}"\n'


def _dependencies_for(venv_site: Path, farm: Path) -> None:
    """Let the scratch virtualenv see the test environment's packages, s25rbl and pip left out."""
    farm.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.lower()
        if name.endswith(".pth") or name.startswith(("s25rbl", "_s25rbl", "__editable__", "pip")):
            continue
        (farm / entry.name).symlink_to(entry)
    (venv_site / "test-dependencies.pth").write_text(f"{farm}\n")


def _build_wheel(directory: Path) -> Path:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(directory),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = directory.glob("s25rbl-*.whl")
    return wheel


@contextlib.contextmanager
def installed_site() -> Iterator[Site]:
    check_netns_support()
    for program in ("unbound", "unbound-checkconf", "unbound-control"):
        require_program(program)
    cleanup_stale()
    tag = f"{PREFIX}{os.getpid()}-install"
    with contextlib.ExitStack() as stack:
        reaper = start_reaper()
        stack.callback(reaper.wait, 10)
        stack.callback(reaper.terminate)
        root = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, root, True)
        root.chmod(0o755)
        ns = NetNamespace(tag)
        stack.callback(ns.delete)
        ns.create()
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

        # The test clients' DNS, as the internet would serve it.
        internet = FakeAuthority()
        with ns.entered():
            internet.start()
        stack.callback(internet.stop)
        for ip, name in (DYNAMIC, PARTNER):
            internet.add_ptr(ip, name)
            internet.add_host(name, ip)

        site = Site(root, ns, _build_wheel(root / "dist"), env)

        # Install: python3 -m venv /opt/s25rbl; pip install '<wheel>[fast]'; ln -s ... /usr/local/bin.
        venv = site.path("/opt/s25rbl")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
        (venv_site,) = venv.glob("lib/python3*/site-packages")
        _dependencies_for(venv_site, root / "test-dependencies")
        pip = site.run(
            str(venv / "bin" / "pip"), "install", "--no-index", "-q", f"{site.wheel}[fast]", timeout=300
        )
        assert pip.returncode == 0, pip.stdout + pip.stderr
        site.path("/usr/local/bin").mkdir(parents=True)
        site.path("/usr/local/bin/s25rbl").symlink_to(venv / "bin" / "s25rbl")

        # The configuration and the unbound snippet, copied where the README puts them.
        config = site.path("/etc/s25rbl/s25rbl.toml")
        config.parent.mkdir(parents=True)
        config.write_text(site.moved((DEPLOY / "s25rbl.toml").read_text()))
        snippet = site.path("/etc/unbound/unbound.conf.d/s25rbl.conf")
        snippet.parent.mkdir(parents=True)
        shutil.copy(DEPLOY / "unbound" / "s25rbl.conf", snippet)

        stubs = {zone: (internet.host, internet.port) for zone in (REVERSE_ZONE, "ocn.ne.jp")}
        unbound = site.unbound = SiteUnbound(ns, root / "unbound", stubs, snippet)
        unbound.directory.mkdir()
        stack.callback(unbound.stop)
        unbound.start()

        def stop_server() -> None:
            if site.server is not None:
                site.server.stop()

        stack.callback(stop_server)
        site.start_unit()
        yield site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    try:
        with installed_site() as running:
            yield running
    except LabUnavailable as err:
        _ci_or_skip(f"the server install cannot be followed here: {err}")


def _a(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def _txt(reply: DNSRecord) -> list[str]:
    return [b"".join(rr.rdata.data).decode() for rr in reply.rr if rr.rtype == QTYPE.TXT]


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


# --------------------------------------------------------------------------------- tests


def test_the_readme_says_what_the_test_does() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Deploy on a server") :]
    section = section[: section.index("\n## ", 1)]
    for command in README_COMMANDS:
        assert command in section, f"README 'Deploy on a server' no longer says: {command}"


def test_the_installed_command_runs_the_wheel(site: Site) -> None:
    python = site.path("/opt/s25rbl/bin/python")
    found = site.run(str(python), "-c", "import s25rbl; print(s25rbl.__file__)")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().startswith(str(site.path("/opt/s25rbl/lib"))), found.stdout
    version = site.run(str(site.path("/usr/local/bin/s25rbl")), "--version")
    assert version.stdout.strip() == f"s25rbl {site.wheel.name.split('-')[1]}"


def test_the_installed_command_writes_its_man_page_and_completion(site: Site) -> None:
    command = str(site.path("/usr/local/bin/s25rbl"))
    for args, where in (
        (["man"], "/usr/local/share/man/man1/s25rbl.1"),
        (["completion", "bash"], "/etc/bash_completion.d/s25rbl"),
    ):
        made = site.run(command, *args)
        assert made.returncode == 0, made.stderr
        path = site.path(where)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(made.stdout)
    page = site.path("/usr/local/share/man/man1/s25rbl.1")
    shown = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        capture_output=True,
        text=True,
        env={**site.env, "MANWIDTH": "80"},
        timeout=60,
    )
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    assert "report-maillog" in shown.stdout and "--revision" in " ".join(shown.stdout.split())
    assert "complete -F _s25rbl s25rbl" in site.path("/etc/bash_completion.d/s25rbl").read_text()


def test_the_unit_serves_where_unbound_sends_the_zones(site: Site) -> None:
    assert site.server is not None
    assert site.server.dns == [("127.0.0.1", 5300)] and site.server.api == ("127.0.0.1", 8300)
    # The check the shipped unbound snippet suggests, through unbound on port 53.
    assert _a(site.ask(f"2.0.0.127.{BL}")) == ["127.0.0.2"]


def test_s25rbl_looks_up_clients_through_the_unbound_in_front(site: Site) -> None:
    # unbound -> s25rbl -> (PTR, A) unbound -> the clients' DNS: the whole loop of the layout.
    name = f"{_reverse(DYNAMIC[0])}.{BL}"
    reply = site.ask(name, "TXT")
    assert _txt(reply) == ["S25R check, be patient [r1]"], (
        f"{reply}\n{''.join(site.server.output if site.server else [])}"
    )
    assert site.unbound is not None
    assert (f"{_reverse(DYNAMIC[0])}.in-addr.arpa", "PTR") in site.unbound.queries()


def test_the_cli_as_the_readme_runs_it_reaches_the_service_store(site: Site) -> None:
    added = site.s25rbl("entries", "add", "white", "ip", PARTNER[0], "--reason", "partner relay")
    assert added.returncode == 0, added.stdout + added.stderr
    name = f"{_reverse(PARTNER[0])}.{WL}"
    # The service reloads within lists.refresh_interval; ask it directly until then, so that
    # unbound does not keep an earlier "not listed" for dns.negative_ttl.
    wait_for(lambda: _a(site.ask(name, server=("127.0.0.1", 5300))) == ["127.0.0.2"], 10, "the CLI's entry")
    assert _a(site.ask(name)) == ["127.0.0.2"]  # and through unbound, as the MTAs ask


def test_the_cli_through_the_api_with_a_token(site: Site) -> None:
    created = site.s25rbl("token", "create", "--name", "ops", "--scope", "write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    added = site.run(
        str(site.path("/usr/local/bin/s25rbl")),
        "entries",
        "add",
        "black",
        "ip",
        BLOCKED,
        "--api",
        "http://127.0.0.1:8300",
        "--token",
        token,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert _a(site.ask(f"{_reverse(BLOCKED)}.{BL}")) == ["127.0.0.3"]  # the API's node answers at once


def test_upgrade_migrate_and_restart_keep_the_store(site: Site) -> None:
    assert site.server is not None
    venv = site.path("/opt/s25rbl")
    again = site.run(
        str(venv / "bin" / "pip"),
        "install",
        "--no-index",
        "-q",
        "--force-reinstall",
        "--no-deps",
        str(site.wheel),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    migrated = site.s25rbl("migrate")
    assert migrated.returncode == 0 and migrated.stdout.startswith("database at revision"), migrated.stderr
    assert site.server.stop(signal.SIGTERM) == 0  # the unit's KillSignal
    site.start_unit()
    direct = ("127.0.0.1", 5300)  # past unbound's cache: what the restarted node itself answers
    assert _a(site.ask(f"{_reverse(PARTNER[0])}.{WL}", server=direct)) == ["127.0.0.2"]
    assert _a(site.ask(f"{_reverse(BLOCKED)}.{BL}", server=direct)) == ["127.0.0.3"]
    assert site.ask(f"{_reverse(PARTNER[0])}.{BL}", server=direct).header.rcode == RCODE.NXDOMAIN
