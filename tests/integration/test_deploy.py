"""deploy/ cannot rot: every file there is loaded, parsed or built by a test.

Docker itself does not run on the test machines, so the container image is checked by what
it is made of: the wheel it installs (with migrations and the OpenAPI document inside), the
configuration it bakes in, and a compose file that parses and wires two nodes to one store.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from s25rbl.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_the_wheel_carries_migrations_and_the_openapi_document(tmp_path: Path) -> None:
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
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("s25rbl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "s25rbl/openapi.yaml" in names
    assert "s25rbl/lists/starter_whitelist.tsv" in names  # package data, read by lists.starter
    migrations = {n for n in names if n.startswith("s25rbl/_migrations/versions/")}
    shipped = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert {Path(n).name for n in migrations} == shipped
    assert "s25rbl/_migrations/env.py" in names


def test_container_configuration_is_valid_with_the_compose_overrides() -> None:
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    env = dict(compose["x-node"]["environment"])
    settings = load_settings(
        DEPLOY / "container" / "s25rbl.toml", environ={k: str(v) for k, v in env.items()}
    )
    assert settings.database.url.startswith("postgresql://")
    assert settings.api.listen.port == 8300
    assert {e.port for e in settings.dns.listen} == {5300}


def test_compose_runs_two_nodes_on_one_postgres() -> None:
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    services = compose["services"]
    nodes = [name for name in services if name.startswith("node")]
    assert len(nodes) >= 2
    for name in nodes:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["environment"]["S25RBL_DATABASE__URL"].endswith("@postgres:5432/s25rbl")


def test_dockerfile_copies_only_files_that_exist() -> None:
    dockerfile = (DEPLOY / "container" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            sources = line.split()[1:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_systemd_units_run_the_commands_the_cli_has() -> None:
    from s25rbl.cli.parser import build_parser, subcommands

    commands = set(subcommands(build_parser()))
    for unit in (DEPLOY / "systemd").glob("*.service"):
        exec_start = re.search(r"^ExecStart=(.+)$", unit.read_text(), re.MULTILINE)
        assert exec_start, unit
        words = exec_start.group(1).split()
        command = next(w for w in words[1:] if not w.startswith("-") and not w.startswith("/etc"))
        assert command in commands, f"{unit.name} runs `{command}`, which the CLI does not have"


def _unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_server_samples_describe_one_layout() -> None:
    """deploy/s25rbl.toml, the unbound snippet and the unit agree: unbound on 53 in front."""
    settings = load_settings(DEPLOY / "s25rbl.toml", environ={})
    unbound = (DEPLOY / "unbound" / "s25rbl.conf").read_text()
    stubs = dict(re.findall(r'name: "([^"]+)"\s+stub-addr: (\S+)', unbound))
    # unbound sends exactly s25rbl's three zones to where s25rbl listens ...
    assert set(stubs) == {settings.dns.zone, settings.dns.whitelist_zone, settings.dns.hostname_zone}
    assert {f"{e.host}@{e.port}" for e in settings.dns.listen} == set(stubs.values())
    # ... s25rbl asks that unbound (port 53 on the same host) for its own lookups ...
    assert [(e.host, e.port) for e in settings.resolver.upstreams] == [("127.0.0.1", 53)]
    assert all(e.port != 53 for e in settings.dns.listen)
    # ... so it needs no privilege, and keeps its store where the unit's StateDirectory is.
    unit = _unit("s25rbl.service")
    assert all(e.port >= 1024 for e in settings.dns.listen) and settings.api.listen.port >= 1024
    assert unit["AmbientCapabilities"] == [""] and unit["CapabilityBoundingSet"] == [""]
    assert unit["User"] == ["s25rbl"]
    assert settings.database.url == f"sqlite:////var/lib/{unit['StateDirectory'][0]}/s25rbl.db"


def test_the_units_run_what_the_readme_installs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "ln -s /opt/s25rbl/bin/s25rbl /usr/local/bin/s25rbl" in readme
    assert "install -D -m 0644 README.md /usr/share/doc/s25rbl/README.md" in readme
    for name in ("s25rbl.service", "s25rbl-report-maillog.service"):
        unit = _unit(name)
        assert unit["ExecStart"][0].startswith("/usr/local/bin/s25rbl "), name
        assert unit["Documentation"] == ["file:///usr/share/doc/s25rbl/README.md"], name
    assert _unit("s25rbl.service")["ExecStart"] == [
        "/usr/local/bin/s25rbl --config /etc/s25rbl/s25rbl.toml serve"
    ]
