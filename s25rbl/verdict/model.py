"""What a verdict is: its code, the step that decided it, and the evidence for the explanation."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from s25rbl.lists.values import EntryKind, ListName
from s25rbl.resolve.rdns import RdnsResult


class Code(enum.IntEnum):
    """The last octet of the 127.0.0.x answer (0: not listed). Never 1: RFC 5782 reserves it."""

    NOT_LISTED = 0
    S25R = 2
    BLACKLIST = 3
    NO_RDNS = 4
    TEMPFAIL = 5


TXT = {
    Code.S25R: "S25R check, be patient [{rule}]",
    Code.BLACKLIST: "domain check, be patient",
    Code.NO_RDNS: "reverse lookup failure, be patient",
    Code.TEMPFAIL: "reverse lookup temporarily failed, be patient",
}


class Step(enum.StrEnum):
    """The step of product §4 that decided, in order."""

    TEST_ENTRY = "rfc5782-test-entry"
    WHITELIST_ADDRESS = "whitelist-address"
    BLACKLIST_ADDRESS = "blacklist-address"
    LEARNED = "learned-whitelist"
    RDNS_TEMPFAIL = "rdns-tempfail"
    WHITELIST_NAME = "whitelist-name"
    BLACKLIST_NAME = "blacklist-name"
    NO_CONFIRMED_NAME = "no-confirmed-name"
    S25R_RULE = "s25r-rule"
    CLEAN = "clean"
    IP_LITERAL = "ip-literal"


class WhitelistCode(enum.IntEnum):
    """The DNSWL zone's answers (RFC 5782): operator whitelist .2, learned from retries .3."""

    NOT_LISTED = 0
    OPERATOR = 2
    LEARNED = 3


@dataclass(frozen=True, slots=True)
class Match:
    """The list entry that decided a step."""

    entry_id: int
    list: ListName
    kind: EntryKind
    value: str
    matched: str  # what it matched: the address or the name


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the pipeline decided about an address or a name, and why."""

    code: Code
    step: Step
    address: str
    match: Match | None = None
    rule: str | None = None  # rN or an operator rule label
    rdns: RdnsResult | None = None
    cached: bool = False
    ttl: int | None = None  # answer TTL override (short for temporary failures)
    notes: tuple[str, ...] = field(default=())

    @property
    def listed(self) -> bool:
        return self.code is not Code.NOT_LISTED

    @property
    def txt(self) -> str | None:
        if self.step is Step.TEST_ENTRY and self.listed:
            return "RFC 5782 test entry, S25R check, be patient"
        template = TXT.get(self.code)
        return template.format(rule=self.rule or "") if template else None

    @property
    def whitelist(self) -> WhitelistCode:
        if self.step is Step.TEST_ENTRY:
            return WhitelistCode.OPERATOR if self.code is Code.S25R else WhitelistCode.NOT_LISTED
        if self.step in (Step.WHITELIST_ADDRESS, Step.WHITELIST_NAME):
            return WhitelistCode.OPERATOR
        if self.step is Step.LEARNED:
            return WhitelistCode.LEARNED
        return WhitelistCode.NOT_LISTED

    def explain(self) -> dict[str, object]:
        """The explanation ``s25rbl check --json`` prints (and the API will serve)."""
        return {
            "address": self.address,
            "listed": self.listed,
            "code": f"127.0.0.{self.code.value}" if self.listed else None,
            "txt": self.txt,
            "step": self.step.value,
            "match": None
            if self.match is None
            else {
                "entry_id": self.match.entry_id,
                "list": self.match.list.value,
                "kind": self.match.kind.value,
                "value": self.match.value,
                "matched": self.match.matched,
            },
            "rule": self.rule,
            "ptr_names": list(self.rdns.names) if self.rdns else [],
            "confirmed_names": list(self.rdns.confirmed) if self.rdns else [],
            "lookup_notes": list(self.rdns.notes) if self.rdns else [],
            "whitelist_code": f"127.0.0.{self.whitelist.value}" if self.whitelist else None,
            "cached": self.cached,
            "notes": list(self.notes),
        }
