"""The six S25R general rules, verbatim, compiled once.

The patterns are the published Postfix regexp rules (case-insensitive), matched against a
forward-confirmed hostname without its trailing dot. Operator-added rules come after them
(RE2, in ``lists.RuleIndex``).
"""

from __future__ import annotations

import re

# Verbatim from the S25R report; do not "improve" them: operators compare against these.
GENERAL_RULES: tuple[tuple[int, str], ...] = (
    (1, r"^[^.]*[0-9][^0-9.]+[0-9].*\."),
    (2, r"^[^.]*[0-9]{5}"),
    (3, r"^([^.]+\.)?[0-9][^.]*\.[^.]+\..+\.[a-z]"),
    (4, r"^[^.]*[0-9]\.[^.]*[0-9]-[0-9]"),
    (5, r"^[^.]*[0-9]\.[^.]*[0-9]\.[^.]+\..+\."),
    (6, r"^(dhcp|dialup|ppp|[achrsvx]?dsl)[^.]*[0-9]"),
)

# Linear enough on real hostnames (at most 253 octets) for Python's engine.
_COMPILED = tuple((f"r{n}", pattern, re.compile(pattern, re.IGNORECASE)) for n, pattern in GENERAL_RULES)


def normalise_hostname(name: str) -> str:
    """Lower-case and strip one trailing dot, as every list and rule compares names."""
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def first_general_rule(name: str) -> tuple[str, str] | None:
    """(label ``rN``, pattern) of the first general rule matching a normalised name."""
    for label, pattern, compiled in _COMPILED:
        if compiled.search(name):
            return label, pattern
    return None


def match_general(hostname: str) -> int | None:
    """The number (1-6) of the first general rule that matches ``hostname``, or None."""
    hit = first_general_rule(normalise_hostname(hostname))
    return int(hit[0][1:]) if hit is not None else None
