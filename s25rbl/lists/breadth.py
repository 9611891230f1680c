"""How much of the world a list regex matches: an operator's regex is tried against a fixed
sample of made-up host names that have nothing in common, and one that matches more than a
small share of them (``.``, ``[a-z]``, ``e``, ``[0-9]``) is refused, on either list. The six
S25R rules match at most a few percent of the sample; a regex meant for one provider's hosts
matches none of it."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

SAMPLE_SIZE = 256
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


def broad_match(compiled: Any) -> str | None:
    """Why a compiled regex matches too much of the world, or None when it does not."""
    names = sample_names()
    hits = [name for name in names if compiled.search(name) is not None]
    if len(hits) <= MAX_SHARE * len(names):
        return None
    examples = ", ".join(hits[:2])
    return (
        f"matches {len(hits)} of {len(names)} unrelated sample host names (e.g. {examples}); "
        f"a list regex may match at most {MAX_SHARE:.0%} of them: anchor it and name the hosts "
        "it is meant for (e.g. ^[^.]+\\.dyn\\.example\\.net$)"
    )
