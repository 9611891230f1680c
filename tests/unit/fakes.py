"""In-memory stand-ins for unit tests: a dict resolver (integration tests use a real server)."""

from __future__ import annotations

import asyncio
import ipaddress

from s25rbl.resolve.codec import AAAA, PTR, A, LookupResult, LookupStatus, reverse_name


class DictResolver:
    """Answers from dicts; a name in ``failing`` answers that status; ``delay`` slows lookups."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], tuple[str, ...]] = {}
        self.failing: dict[str, LookupStatus] = {}
        self.delay = 0.0
        self.calls: list[tuple[str, int]] = []
        self.ttl = 300

    def host(self, name: str, *addresses: str) -> DictResolver:
        for address in addresses:
            rdtype = A if ipaddress.ip_address(address).version == 4 else AAAA
            key = (name.lower(), rdtype)
            self.records[key] = (*self.records.get(key, ()), address)
        return self

    def ptr(self, address: str, *names: str) -> DictResolver:
        self.records[(reverse_name(address), PTR)] = tuple(n.lower() for n in names)
        return self

    def fail(self, name_or_ip: str, status: LookupStatus) -> DictResolver:
        try:
            name = reverse_name(name_or_ip)
        except ValueError:
            name = name_or_ip.lower()
        self.failing[name] = status
        return self

    async def lookup(self, name: str, rdtype: int) -> LookupResult:
        self.calls.append((name, rdtype))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.failing.get(name)
        if status is not None:
            return LookupResult(status, (), 0)
        values = self.records.get((name, rdtype))
        if values:
            return LookupResult(LookupStatus.OK, values, self.ttl)
        if any(key[0] == name for key in self.records):
            return LookupResult(LookupStatus.NODATA, (), 60)
        return LookupResult(LookupStatus.NXDOMAIN, (), 60)

    async def close(self) -> None:
        return None
