"""deploy/ cannot rot: every file there is loaded, parsed or built by a test.

Docker itself does not run on the test machines, so the container image is checked by what
it is made of: the wheel it installs (with migrations and the OpenAPI document inside), the
configuration it bakes in, and a compose file that parses and wires two nodes to one store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from s25rbl.api.client import ApiClient
from s25rbl.config import load_settings
from s25rbl.errors import ApiError
from tests.integration.api_client import make_token
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_the_wheel_carries_migrations_the_openapi_document_and_the_pages_files(tmp_path: Path) -> None:
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
    # The operator's page's templates and static files: a mail server has no CDN to fall back on.
    page = ROOT / "s25rbl" / "ui"
    for folder in ("templates", "static"):
        shipped_files = {f"s25rbl/ui/{folder}/{p.name}" for p in (page / folder).iterdir() if p.is_file()}
        assert shipped_files and shipped_files <= names, shipped_files - names
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


def test_the_container_sample_publishes_every_port_on_loopback_only() -> None:
    """The API is plain HTTP with /metrics open, and DNS is for the site's resolvers: nothing
    published on every interface by default (remote reporters go through a TLS proxy)."""
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    published = [
        (name, port) for name, service in compose["services"].items() for port in service.get("ports", [])
    ]
    assert published, "the nodes publish their DNS and API ports"
    for name, port in published:
        host = str(port).split(":")[0]
        assert host in ("127.0.0.1", "[::1]"), f"{name} publishes {port} beyond loopback"


def test_the_tls_proxy_sample_keeps_metrics_local_and_streams_exports() -> None:
    conf = (DEPLOY / "nginx" / "s25rbl-api.conf").read_text()
    assert re.search(r"listen 443 ssl;", conf) and "ssl_certificate " in conf
    assert re.search(r"location = /metrics \{\s*return 404;", conf)
    assert "proxy_buffering off;" in conf  # exports are streamed: pass them on as they come
    # The operator's page's cookie is Secure behind it (with ui.trusted_proxies naming it).
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    upstream = re.search(r"upstream s25rbl_api \{([^}]*)\}", conf)
    assert upstream and "server 127.0.0.1:8300;" in upstream.group(1)
    body = re.search(r"client_max_body_size (\d+)m;", conf)
    defaults = load_settings(None, environ={})
    assert body and int(body.group(1)) * 1024 * 1024 >= defaults.api.max_body  # imports pass
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return  # the syntax check below needs nginx; the checks above do not
    check_config_with_nginx(nginx, conf)


def check_config_with_nginx(nginx: str, conf: str) -> None:
    """``nginx -t`` on the sample inside a minimal main configuration, with a throw-away key."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=test",
                "-keyout",
                str(root / "key.pem"),
                "-out",
                str(root / "cert.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        site = conf.replace("/etc/ssl/s25rbl/fullchain.pem", str(root / "cert.pem")).replace(
            "/etc/ssl/s25rbl/privkey.pem", str(root / "key.pem")
        )
        (root / "site.conf").write_text(site)
        (root / "nginx.conf").write_text(
            f"pid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\n"
            f"http {{ access_log off; include {root}/site.conf; }}\n"
        )
        result = subprocess.run(
            [nginx, "-t", "-c", str(root / "nginx.conf"), "-p", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture
def tls_proxy(server_sqlite: RunningServer, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The shipped nginx sample in front of a running node: (its HTTPS port, the CA file)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        if os.environ.get("S25RBL_CI"):
            pytest.fail("nginx is not installed (scripts/test.sh installs nginx-light)")
        pytest.skip("nginx is not installed")
    assert server_sqlite.api is not None
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = (
        (DEPLOY / "nginx" / "s25rbl-api.conf")
        .read_text()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        .replace("listen [::]:443 ssl;", "")
        .replace("server 127.0.0.1:8300;", f"server 127.0.0.1:{server_sqlite.api[1]};")
        .replace("/etc/ssl/s25rbl/fullchain.pem", str(tmp_path / "cert.pem"))
        .replace("/etc/ssl/s25rbl/privkey.pem", str(tmp_path / "key.pem"))
    )
    (tmp_path / "site.conf").write_text(site)
    temp = "".join(f"{kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy"))
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off;\n{temp}include {tmp_path}/site.conf; }}\n"
    )
    proxy = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield port, tmp_path / "cert.pem"
    finally:
        proxy.terminate()
        proxy.wait(10)


@pytest.fixture
def server_sqlite(tmp_path: Path, upstream: FakeAuthority) -> Iterator[RunningServer]:
    running = start_server(
        write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), tmp_path / "s25rbl.db")
    )
    try:
        yield running
    finally:
        running.stop()


def test_a_remote_reporter_reaches_the_api_through_the_tls_proxy_sample(
    server_sqlite: RunningServer, tls_proxy: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca = tls_proxy
    base = f"https://127.0.0.1:{port}"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the reporter's client trusts the proxy's certificate
    reporter = ApiClient(base, make_token(server_sqlite, "mx9", "report"))
    report = {"client_ip": "198.51.100.7", "sender": "a@shop.example", "recipient": "b@example.org"}
    assert reporter.json("POST", "/v1/reports", report)["accepted"] == 1
    reader = make_token(server_sqlite, "viewer", "read")
    with pytest.raises(ApiError) as hidden:
        ApiClient(base, reader).call("GET", "/metrics")
    assert hidden.value.status == 404  # /metrics stays on the loopback address
    exported = server_sqlite.cli(
        "export", "--api", base, "--token", reader, "--format", "json", "--list", "white"
    )
    assert exported.returncode != 0  # the CLI process does not trust the private CA ...
    env_cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "s25rbl",
            "--config",
            str(server_sqlite.config),
            "export",
            "--api",
            base,
            "--token",
            reader,
            "--format",
            "json",
            "--list",
            "white",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**server_sqlite.env, "SSL_CERT_FILE": str(ca)},
    )
    assert env_cli.returncode == 0, env_cli.stderr  # ... with SSL_CERT_FILE it does, streamed through
    assert any(e["value"] == "hotmail.com" for e in json.loads(env_cli.stdout))


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
