"""Where a name stands in the DNS tree, by the public suffix list (shipped with the
``publicsuffixlist`` package: nothing is fetched at run time). One list, loaded once."""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def load_public_suffixes() -> None:
    """Load the list now (about 0.1 s of CPU): in a thread, before the event loop needs it."""
    _psl()


def is_public_suffix(name: str) -> bool:
    """``com``, ``co.jp``, ``ne.jp``: names under which anyone may register."""
    return bool(_psl().is_public(name.lower().rstrip(".")))


def registrable_domain(name: str) -> str | None:
    """The registrable domain of a host name (``bay6.hotmail.com`` -> ``hotmail.com``)."""
    domain = _psl().privatesuffix(name.lower().rstrip("."))
    return str(domain) if domain else None


def is_domain_level(name: str) -> bool:
    """True for a public suffix (``com``, ``co.jp``) or a registrable domain (``hotmail.com``):
    the levels above the hosts that may be listed."""
    return is_public_suffix(name) or registrable_domain(name) == name.lower().rstrip(".")
