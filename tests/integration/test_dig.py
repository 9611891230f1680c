"""Interop: the real ``dig`` (BIND's client) against a running s25rbl, over UDP and TCP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import DYNAMIC, populate
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.interop

BL = "bl.s25rbl.test"
TRANSPORTS = ["udp", "tcp"]


@dataclass
class Record:
    name: str
    ttl: int
    rtype: str
    rdata: str


@dataclass
class DigReply:
    """The last message dig printed (with ``+qr`` the query comes first), parsed."""

    status: str
    flags: set[str]
    counts: dict[str, int]
    sections: dict[str, list[str]] = field(default_factory=dict)
    text: str = ""

    def records(self, section: str) -> list[Record]:
        out = []
        for line in self.sections.get(section, []):
            name, ttl, _cls, rtype, rdata = line.split(None, 4)
            out.append(Record(name, int(ttl), rtype, rdata))
        return out


DigRunner = Callable[..., DigReply]  # (transport, *dig arguments) -> the parsed answer


def _require_dig() -> str:
    path = shutil.which("dig")
    if path is None:
        message = "dig is not installed; this interop test needs the real program (bind9-dnsutils)"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
        pytest.skip(message)
    return path


def parse(text: str) -> DigReply:
    heads = [m.start() for m in re.finditer(r"^;; ->>HEADER<<-", text, re.MULTILINE)]
    assert heads, f"dig printed no DNS message:\n{text}"
    message = text[heads[-1] :]
    status = re.search(r"status: (\w+)", message)
    flags = re.search(r"^;; flags:([^;]*);(.*)$", message, re.MULTILINE)
    assert status and flags, message
    counts = {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", flags.group(2))}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in message.splitlines()[1:]:
        head = re.match(r"^;; (\w+) (?:SECTION|PSEUDOSECTION):$", line)
        if head:
            current = sections.setdefault(head.group(1), [])
        elif not line.strip() or line.startswith(";; "):
            current = None
        elif current is not None:
            current.append(line)
    return DigReply(status.group(1), set(flags.group(1).split()), counts, sections, message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the whole module (these tests only read): the conftest data and config."""
    _require_dig()
    tmp = tmp_path_factory.mktemp("dig")
    with FakeAuthority() as upstream:
        populate(upstream)
        running = start_server(
            write_config(tmp / "s25rbl.toml", (upstream.host, upstream.port), tmp / "s25rbl.db")
        )
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def dig(server: RunningServer, tmp_path: Path) -> DigRunner:
    program = _require_dig()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}  # no ~/.digrc

    def run(transport: str, *args: str) -> DigReply:
        command = [program, f"@{server.host}", "-p", str(server.port), "+tries=1", "+time=5"]
        if transport == "tcp":
            command.append("+tcp")
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env, timeout=30, check=False
        )
        assert result.returncode == 0, f"{command} {args}: rc={result.returncode}\n{result.stdout}"
        return parse(result.stdout)

    return run


def soa_in_authority(reply: DigReply) -> Record:
    soa = [r for r in reply.records("AUTHORITY") if r.rtype == "SOA"]
    assert len(soa) == 1, reply.text
    assert soa[0].name.lower() == BL + "."
    return soa[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rfc5782_listed_entry_is_an_authoritative_a(dig: DigRunner, transport: str) -> None:
    reply = dig(transport, f"2.0.0.127.{BL}", "A")
    assert reply.status == "NOERROR"
    assert {"qr", "aa"} <= reply.flags
    assert [(r.name, r.rtype, r.rdata) for r in reply.records("ANSWER")] == [
        (f"2.0.0.127.{BL}.", "A", "127.0.0.2")
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_txt_of_a_dynamic_host_names_the_rule(dig: DigRunner, transport: str) -> None:
    qname = ".".join(reversed(DYNAMIC[0].split("."))) + "." + BL
    reply = dig(transport, qname, "TXT")
    assert reply.status == "NOERROR"
    assert "aa" in reply.flags
    assert [(r.rtype, r.rdata) for r in reply.records("ANSWER")] == [("TXT", '"S25R check, be patient [r1]"')]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rfc5782_unlisted_entry_is_nxdomain_with_soa(dig: DigRunner, transport: str) -> None:
    reply = dig(transport, f"1.0.0.127.{BL}", "A")
    assert reply.status == "NXDOMAIN"
    assert "aa" in reply.flags
    assert reply.counts["ANSWER"] == 0
    soa_in_authority(reply)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_zone_apex_soa_and_ns(dig: DigRunner, transport: str) -> None:
    soa = dig(transport, BL, "SOA")
    assert soa.status == "NOERROR" and "aa" in soa.flags
    records = soa.records("ANSWER")
    assert [(r.name.lower(), r.rtype) for r in records] == [(BL + ".", "SOA")]
    assert len(records[0].rdata.split()) == 7  # mname rname serial refresh retry expire minimum

    ns = dig(transport, BL, "NS")
    assert ns.status == "NOERROR" and "aa" in ns.flags
    assert [(r.name.lower(), r.rtype, r.rdata.lower()) for r in ns.records("ANSWER")] == [
        (BL + ".", "NS", "ns1.s25rbl.test.")
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("partial", ["1", "0.1", "0.0.1"])
def test_partial_name_is_an_empty_non_terminal(dig: DigRunner, transport: str, partial: str) -> None:
    reply = dig(transport, f"{partial}.{BL}", "A")
    assert reply.status == "NOERROR"  # NXDOMAIN here breaks QNAME-minimising resolvers
    assert reply.counts["ANSWER"] == 0
    soa_in_authority(reply)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_name_outside_the_zones_is_refused(dig: DigRunner, transport: str) -> None:
    reply = dig(transport, "www.example.com", "A")
    assert reply.status == "REFUSED"
    assert "aa" not in reply.flags
    assert reply.counts["ANSWER"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_edns0_query_gets_an_opt_record(dig: DigRunner, transport: str) -> None:
    reply = dig(transport, "+qr", "+edns=0", "+bufsize=512", f"2.0.0.127.{BL}", "A")
    assert "OPT" in reply.sections, reply.text  # the answer's, not the query's (+qr prints both)
    assert re.search(r"EDNS: version: 0\b", "\n".join(reply.sections["OPT"])), reply.text
    assert [r.rdata for r in reply.records("ANSWER")] == ["127.0.0.2"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_query_without_edns_gets_no_opt_record(dig: DigRunner, transport: str) -> None:
    reply = dig(transport, "+noedns", f"2.0.0.127.{BL}", "A")
    assert "OPT" not in reply.sections, reply.text  # RFC 6891 7: no OPT unless the query had one
    assert [r.rdata for r in reply.records("ANSWER")] == ["127.0.0.2"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_question_case_is_echoed_as_asked(dig: DigRunner, transport: str) -> None:
    reply = dig(transport, "2.0.0.127.Bl.S25rbl.TEST", "A")
    question = [line.split() for line in reply.sections["QUESTION"]]
    assert question == [[";2.0.0.127.Bl.S25rbl.TEST.", "IN", "A"]], reply.text
    assert reply.status == "NOERROR"
    assert [r.rdata for r in reply.records("ANSWER")] == ["127.0.0.2"]
