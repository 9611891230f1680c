"""Envelope senders, normalised so that one sender's retries compare equal.

Real MTAs rewrite the envelope sender per message: BATV signs it (``prvs=TAG=user@dom``), SRS
wraps forwarded mail (``SRS0=HASH=TT=orig.dom=user@fwd``), mailing lists and bulk senders
encode the recipient or a message number in it (VERP: ``list-bounces+rcpt=dom@lists``,
``bounce-4711-abcdef123456@mailer``). A retry keeps the sender's identity but not always these
tags, so they are removed before comparing; the original is kept for the evidence.
"""

from __future__ import annotations

import re

_BATV = re.compile(r"^(?:prvs|msprvs\d*|btv1)=[^=@]+=(?P<local>.+)$", re.IGNORECASE)
_BATV_SUFFIX = re.compile(r"^(?P<local>[^=]+)=prvs=[^@]+$", re.IGNORECASE)  # user=prvs=TAG (old form)
_SRS0 = re.compile(r"^srs0[=+-][^=]*=[^=]*=(?P<domain>[^=]+)=(?P<local>.+)$", re.IGNORECASE)
_SRS1 = re.compile(r"^srs1[=+-][^=]*=[^=]*==(?P<rest>.+)$", re.IGNORECASE)
# Digit runs of 4+ or hex tokens of 6+ with a digit, standing alone between separators.
_LONG_TOKEN = re.compile(
    r"(?<![0-9a-z])(?:[0-9]{4,}|(?=[0-9a-f]*[0-9])[0-9a-f]{6,})(?![0-9a-z])", re.IGNORECASE
)


def normalise_sender(sender: str) -> str:
    """The comparable form of an envelope sender: tags removed, domain lower-cased.

    The null sender stays ``""``. A sender without ``@`` is only lower-cased.
    """
    text = sender.strip().strip("<>").strip()
    if not text:
        return ""
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()
    domain = domain.lower().rstrip(".")
    srs1 = _SRS1.match(local)
    if srs1:
        local = "SRS0=" + srs1.group("rest")  # the rest is an SRS0 body: HASH=TT=domain=local
    srs0 = _SRS0.match(local)
    if srs0:
        local, domain = srs0.group("local"), srs0.group("domain").lower()
    batv = _BATV.match(local) or _BATV_SUFFIX.match(local)
    if batv:
        local = batv.group("local")
    # VERP and sub-addressing: list-bounces+rcpt=dom, bounces-rcpt=dom, user+tag.
    if "+" in local:
        local = local.split("+", 1)[0]
    if "=" in local:
        head = local.split("=", 1)[0]
        local = head.rsplit("-", 1)[0] if "-" in head else head
    # Per-message numbers and hashes: bounce-4711-9f8e7d6c5b4a -> bounce-#-#.
    local = _LONG_TOKEN.sub("#", local)
    return f"{local}@{domain}"


def normalise_recipient(recipient: str) -> str:
    return recipient.strip().strip("<>").strip().lower()
