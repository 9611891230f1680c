"""Explain: an address or a hostname, judged by the same engine, lists and caches as DNS, shown
step by step (product §4), with one-click entries for what decided it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from s25rbl.errors import InvalidEntry
from s25rbl.lists.domains import registrable_domain
from s25rbl.lists.values import (
    EntryKind,
    EntrySpec,
    parse_address_literal,
    parse_hostname,
    parse_ip,
)
from s25rbl.ui.base import HOME, action, perform, principal_of, query_text, render, text_field, view
from s25rbl.ui.context import ui_of
from s25rbl.verdict.model import Step, Verdict

# The verdict's steps in the order they are tried (product §4), as the page names them.
ADDRESS_STEPS = (
    (Step.WHITELIST_ADDRESS, "Operator whitelist by address or network"),
    (Step.BLACKLIST_ADDRESS, "Operator blacklist by address or network"),
    (Step.LEARNED, "Learned from retries"),
    (Step.RDNS_TEMPFAIL, "Reverse lookup: PTR names, each confirmed by its A/AAAA"),
    (Step.WHITELIST_NAME, "Operator whitelist by hostname, domain or regex (confirmed names)"),
    (Step.BLACKLIST_NAME, "Operator blacklist by hostname, domain or regex"),
    (Step.NO_CONFIRMED_NAME, "A confirmed name exists (else rule 0)"),
    (Step.S25R_RULE, "S25R rules 1-6 and operator rules"),
    (Step.CLEAN, "Not listed"),
)
NAME_STEPS = (
    (Step.WHITELIST_NAME, "Operator whitelist by hostname, domain or regex"),
    (Step.BLACKLIST_NAME, "Operator blacklist by hostname, domain or regex"),
    (Step.S25R_RULE, "S25R rules 1-6 and operator rules"),
    (Step.CLEAN, "Not listed"),
)


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step as shown: passed (did not decide), decided, or not reached."""

    title: str
    state: str


@dataclass(frozen=True, slots=True)
class Target:
    """Something an entry could be made for: the address, a confirmed name, its domain."""

    kind: EntryKind
    value: str


def steps_of(verdict: Verdict, by_address: bool) -> list[StepRow]:
    order = ADDRESS_STEPS if by_address else NAME_STEPS
    if verdict.step not in {step for step, _ in order}:
        return []  # test entries and address literals decide before any step
    rows, reached = [], True
    for step, title in order:
        if step is verdict.step:
            rows.append(StepRow(title, "decided"))
            reached = False
        elif step is Step.RDNS_TEMPFAIL and reached:
            rows.append(StepRow(title, "looked up"))
        else:
            rows.append(StepRow(title, "passed" if reached else "not reached"))
    return rows


ORDER = {step: n for n, (step, _) in enumerate(ADDRESS_STEPS, 1)}


def targets_of(verdict: Verdict, by_address: bool) -> list[Target]:
    """What the operator may whitelist (if listed) or blacklist (if not), most specific first:
    only entries whose step comes before the one that decided, so each would change the
    verdict (a hostname whitelist cannot undo a blacklisted address, which decides first)."""
    decided = ORDER.get(verdict.step)
    if decided is None:
        return []  # a test entry or an address literal: nothing to list
    targets: list[Target] = []
    ip_step = ORDER[Step.WHITELIST_ADDRESS if verdict.listed else Step.BLACKLIST_ADDRESS]
    name_step = ORDER[Step.WHITELIST_NAME if verdict.listed else Step.BLACKLIST_NAME]
    if by_address and ip_step < decided:
        targets.append(Target(EntryKind.IP, verdict.address))
    if name_step >= decided:
        return targets
    names = list(verdict.rdns.confirmed) if verdict.rdns else []
    if not by_address:
        names = [verdict.address]
    for name in names[:3]:
        targets.append(Target(EntryKind.HOSTNAME, name))
        domain = registrable_domain(name)
        if domain and domain != name and all(t.value != domain for t in targets):
            targets.append(Target(EntryKind.DOMAIN, domain))
    return targets


def _parse(text: str) -> tuple[str, bool]:
    """(the canonical address or name, whether it is an address)."""
    try:
        return str(parse_ip(text, "q")), True
    except InvalidEntry:
        pass
    if text.startswith("[") and text.endswith("]"):
        if parse_address_literal(text) is None:
            raise InvalidEntry("q", f"{text!r} is neither an address nor a hostname")
        return text.lower(), False
    try:
        return parse_hostname(text, "q"), False
    except InvalidEntry:
        raise InvalidEntry("q", f"{text!r} is neither an address nor a hostname") from None


@view()
async def explain(request: web.Request) -> web.StreamResponse:
    text = query_text(request, "q", 260)
    if not text:
        return render(request, "explain.html", q="", verdict=None)
    engine = ui_of(request).api.engine
    try:
        subject, by_address = _parse(text)
    except InvalidEntry as exc:
        return render(request, "explain.html", status=422, q=text, verdict=None, error=exc.problem)
    verdict = await engine.decide(parse_ip(subject)) if by_address else engine.decide_name(subject)
    return render(
        request,
        "explain.html",
        q=subject,
        verdict=verdict,
        by_address=by_address,
        steps=steps_of(verdict, by_address),
        targets=targets_of(verdict, by_address),
        back=f"{HOME}explain?q={quote(subject)}",
    )


@action()
async def add_from_explain(request: web.Request) -> web.StreamResponse:
    """Whitelist or blacklist one of the targets the explanation offered."""
    form = await request.post()
    lists = ui_of(request).api.services.lists
    subject = text_field(form, "q", 260).strip()

    async def do() -> str:
        spec = EntrySpec.build(
            text_field(form, "list", 8),
            text_field(form, "kind", 16),
            text_field(form, "value", 512),
            text_field(form, "reason", 255),
        )
        entry = await lists.add_one(spec, actor=principal_of(request).actor)
        return f"{spec.list}listed {spec.kind} {spec.value} (entry #{entry.id})."

    return await perform(request, f"{HOME}explain?q={quote(subject)}", do)


def setup(app: web.Application) -> None:
    app.router.add_get("/explain", explain)
    app.router.add_post("/explain/add", add_from_explain)
