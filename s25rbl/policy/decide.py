"""The policy's decisions as plain code, without I/O (product §7): who is treated, how each mode
treats a listed client, greylisting, and what a session's DATA and end of message mean.

The caller gathers the state a step needs (the session, the client's last tarpit, the triplet)
and applies the ``Effect`` of the decision; times are seconds since the epoch.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from s25rbl.config import PolicySettings
from s25rbl.learning.senders import normalise_recipient, normalise_sender
from s25rbl.lists.values import IPAddress
from s25rbl.policy.protocol import PolicyRequest
from s25rbl.service.policy import ClientTarpit as ClientTarpit  # re-exported: decisions read it
from s25rbl.service.policy import TripletState as TripletState  # re-exported
from s25rbl.verdict.model import Code, Verdict

DUNNO = "DUNNO"
RCPT, DATA, END_OF_MESSAGE = "RCPT", "DATA", "END-OF-MESSAGE"
MAX_GRACE = 30.0  # at most this long after a tarpit ends for the session to reach DATA


class Mode(enum.StrEnum):
    """``policy.mode``: what a listed client meets at RCPT."""

    S25R = "s25r"
    RGREY = "rgrey"
    STARPIT = "starpit"
    TARGREY = "targrey"


class Outcome(enum.StrEnum):
    """What a decision did: the label of the counters and the word in the log."""

    NOT_TREATED = "not-treated"  # another stage, an authenticated or an unlisted client
    TEMPFAIL = "tempfail"  # the client's reverse lookup failed for now
    REJECTED = "rejected"  # mode s25r: 450
    TARPIT = "tarpit"  # SLEEP: the session's first recipient
    SESSION = "session"  # a later recipient of a tarpitted session
    DEFERRED = "greylist-deferred"
    PASSED = "greylist-passed"  # a triplet's retry after the delay: a pass
    KNOWN = "greylist-known"  # a triplet that passed before
    SURVIVED = "tarpit-survived"  # DATA after the tarpit
    DELIVERED = "tarpit-delivered"  # the message after the tarpit: a pass
    FAIL_OPEN = "fail-open"  # the state could not be read in time


class Effect(enum.Enum):
    """The state change a decision asks for."""

    NONE = enum.auto()
    START_TARPIT = enum.auto()  # record the session as tarpitted, and its triplet's first attempt
    CREATE_TRIPLET = enum.auto()
    RESET_TRIPLET = enum.auto()  # the first attempt is too old: it counts from now
    PASS_TRIPLET = enum.auto()
    TOUCH_TRIPLET = enum.auto()  # a passed triplet seen again (keeps it from expiring)
    SURVIVE = enum.auto()
    DELIVER = enum.auto()


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for the MTA, what it means, why, and the state change it asks for."""

    action: str
    outcome: Outcome
    reason: str
    effect: Effect = Effect.NONE


@dataclass(frozen=True, slots=True)
class Greylist:
    """``rcpt`` hands the request to greylisting, for this reason."""

    reason: str


class Session(enum.Enum):
    """What this node knows of an SMTP transaction (``instance``) of a listed client."""

    TARPITTED = enum.auto()
    SURVIVED = enum.auto()
    DELIVERED = enum.auto()


@dataclass(frozen=True, slots=True)
class Triplet:
    """(client network, normalised sender, lower-cased recipient) and its digest ``key``."""

    network: str
    sender: str
    recipient: str
    key: str

    @classmethod
    def of(cls, client: IPAddress, sender: str, recipient: str, settings: PolicySettings) -> Triplet:
        prefix = settings.ipv4_prefix if client.version == 4 else settings.ipv6_prefix
        host_bits = client.max_prefixlen - prefix
        network = f"{type(client)(int(client) >> host_bits << host_bits)}/{prefix}"
        sender, recipient = normalise_sender(sender), normalise_recipient(recipient)
        digest = hashlib.blake2b(f"{network}\0{sender}\0{recipient}".encode(), digest_size=16)
        return cls(network, sender, recipient, digest.hexdigest())


def defer(text: str) -> str:
    return f"DEFER_IF_PERMIT 4.7.1 {text}"


def grace(tarpit: float) -> float:
    """How long after its tarpit ends a session may take to reach DATA before it counts as
    hung up: as long again as the tarpit, at most MAX_GRACE."""
    return min(tarpit, MAX_GRACE)


def abandoned(record: ClientTarpit, now: float, tarpit: float) -> bool:
    """The client hung up during that tarpit: it never reached DATA, and no longer can."""
    return not record.survived and now > record.started + tarpit + grace(tarpit)


def before_verdict(request: PolicyRequest, mode: Mode) -> Decision | None:
    """Requests answered without the client's verdict; None: the verdict decides."""
    if request.stage not in (RCPT, DATA, END_OF_MESSAGE):
        where = request.stage or "an unknown stage"
        return Decision(DUNNO, Outcome.NOT_TREATED, f"asked at {where}: the policy acts at RCPT")
    if request.stage != RCPT and mode not in (Mode.STARPIT, Mode.TARGREY):
        return Decision(DUNNO, Outcome.NOT_TREATED, f"{request.stage}: mode {mode} has no tarpit to end")
    if request.authenticated:
        return Decision(DUNNO, Outcome.NOT_TREATED, "authenticated (SASL) client")
    return None


def after_verdict(request: PolicyRequest, verdict: Verdict, settings: PolicySettings) -> Decision | None:
    """Requests the verdict decides alone; None: a listed client's state decides."""
    if verdict.code is Code.NOT_LISTED:
        return Decision(DUNNO, Outcome.NOT_TREATED, f"not listed ({verdict.step})")
    if verdict.code is Code.TEMPFAIL:
        if request.stage == RCPT and settings.on_tempfail == "defer":
            return Decision(defer(verdict.txt or ""), Outcome.TEMPFAIL, "reverse lookup failed for now")
        return Decision(DUNNO, Outcome.TEMPFAIL, "reverse lookup failed for now: let it through")
    if request.stage == RCPT and Mode(settings.mode) is Mode.S25R:
        return Decision(f"450 4.7.1 {verdict.txt}", Outcome.REJECTED, f"listed ({verdict.step})")
    return None


def rcpt(
    mode: Mode,
    request: PolicyRequest,
    session: Session | None,
    client: ClientTarpit | None,
    *,
    slot_free: bool,
    now: float,
    tarpit: int,
) -> Decision | Greylist:
    """A listed client's RCPT in modes rgrey, starpit and targrey."""
    if mode is Mode.RGREY:
        return Greylist("mode rgrey")
    same = client is not None and request.instance != "" and client.instance == request.instance
    if session is not None or same:
        return Decision(DUNNO, Outcome.SESSION, "a later recipient of a tarpitted session")
    if mode is Mode.TARGREY and client is not None and abandoned(client, now, tarpit):
        return Greylist(f"hung up during a tarpit {now - client.started:.0f} s ago")
    if request.stress:
        return Greylist("the MTA is under stress: no tarpit")
    if not slot_free:
        return Greylist("max_tarpits sessions are tarpitted already")
    return Decision(f"SLEEP {tarpit}", Outcome.TARPIT, "first recipient of the session", Effect.START_TARPIT)


def greylist(
    triplet: TripletState | None, now: float, settings: PolicySettings, text: str, why: str
) -> Decision:
    """Greylisting: the first attempt of a triplet is deferred; a retry after ``delay``, within
    ``retry_window``, passes; a passed triplet passes until it expires."""
    if triplet is None:
        return Decision(defer(text), Outcome.DEFERRED, f"{why}; first attempt", Effect.CREATE_TRIPLET)
    if triplet.passed_at is not None:
        return Decision(DUNNO, Outcome.KNOWN, f"{why}; the triplet passed before", Effect.TOUCH_TRIPLET)
    age = now - triplet.first_seen
    if age < settings.delay:
        return Decision(defer(text), Outcome.DEFERRED, f"{why}; retried {age:.0f} s after the first attempt")
    if age <= settings.retry_window:
        return Decision(DUNNO, Outcome.PASSED, f"{why}; retried after {age:.0f} s", Effect.PASS_TRIPLET)
    return Decision(defer(text), Outcome.DEFERRED, f"{why}; first attempt expired", Effect.RESET_TRIPLET)


def after_tarpit(request: PolicyRequest, session: Session | None, client: ClientTarpit | None) -> Decision:
    """A listed client's DATA (it survived the tarpit) or end of message (it delivered: a pass).

    Always DUNNO: these stages only tell whether a tarpitted session went on.
    """
    if session is None and client is not None and request.instance and client.instance == request.instance:
        session = Session.DELIVERED if client.delivered else (Session.SURVIVED if client.survived else None)
        session = session or Session.TARPITTED
    if session is None:
        return Decision(DUNNO, Outcome.NOT_TREATED, f"{request.stage} of a session that was not tarpitted")
    if request.stage == DATA:
        if session is Session.TARPITTED:
            return Decision(DUNNO, Outcome.SURVIVED, "DATA after the tarpit", Effect.SURVIVE)
        return Decision(DUNNO, Outcome.NOT_TREATED, "DATA again")
    if session is Session.DELIVERED:
        return Decision(DUNNO, Outcome.NOT_TREATED, "another message of a session that delivered")
    return Decision(DUNNO, Outcome.DELIVERED, "the message after the tarpit", Effect.DELIVER)
