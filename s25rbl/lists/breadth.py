"""How much of the world a list regex matches: an operator's regex is tried against a fixed
sample of made-up host names that have nothing in common, and one that matches more than a
small share of them (``.``, ``[a-z]``, ``e``, ``[0-9]``) is refused, on either list. The six
S25R rules match at most a few percent of the sample; a regex meant for one provider's hosts
matches none of it."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

SAMPLE_SIZE = 128
MAX_SHARE = 0.20  # a regex matching more than this share of the sample is refused
_TLDS = [
    "com",
    "net",
    "org",
    "jp",
    "de",
    "uk",
    "fr",
    "br",
    "ru",
    "cn",
    "io",
    "info",
    "nl",
    "it",
    "pl",
    "au",
    "in",
    "kr",
    "es",
    "ca",
]
_CHARS = "abcdefghijklmnopqrstuvwxyz" * 6 + "0123456789-"


@cache
def sample_names() -> tuple[str, ...]:
    """The fixed sample: host names of one to four random labels under twenty common TLDs
    (the same on every run and every machine: a seeded generator)."""
    rnd = random.Random(25)
    names = []
    for _ in range(SAMPLE_SIZE):
        labels = []
        for _ in range(rnd.randint(1, 4)):
            label = "".join(rnd.choice(_CHARS) for _ in range(rnd.randint(2, 12))).strip("-")
            labels.append(label or "x")
        names.append(".".join([*labels, rnd.choice(_TLDS)]))
    return tuple(names)


@cache
def _sample_bytes() -> tuple[bytes, ...]:
    return tuple(name.encode() for name in sample_names())


def broad_match(compiled: Any) -> str | None:
    """Why a regex matches too much of the world, or None when it does not. ``compiled`` is
    the regex compiled from its UTF-8 bytes: searching bytes costs half of searching text."""
    names = _sample_bytes()
    most = int(MAX_SHARE * len(names))
    hits = []
    for name in names:
        if compiled.search(name) is not None:
            hits.append(name.decode())
            if len(hits) > most:
                break
    else:
        return None
    examples = ", ".join(hits[:2])
    return (
        f"matches more than {MAX_SHARE:.0%} of a sample of {len(names)} unrelated host names "
        f"(e.g. {examples}): anchor it and name the hosts it is meant for "
        "(e.g. ^[^.]+\\.dyn\\.example\\.net$)"
    )
