"""What the policy would do for a client's next session, and why: for ``s25rbl check IP`` and
``GET /v1/check/{ip}``. The same decisions as the listener, on the state in the store; nothing
is written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from s25rbl.config import PolicySettings
from s25rbl.lists.values import parse_ip
from s25rbl.policy import decide
from s25rbl.policy.decide import RCPT, Decision, Mode, Triplet
from s25rbl.policy.protocol import PolicyRequest
from s25rbl.service.policy import PolicyStore
from s25rbl.verdict.model import Verdict


def _time(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


async def explain(
    verdict: Verdict,
    settings: PolicySettings,
    store: PolicyStore,
    *,
    sender: str | None,
    recipient: str | None,
    now: float,
) -> dict[str, Any]:
    """The RCPT decision for a new session of the client (``sender`` and ``recipient`` make the
    triplet; without them a triplet never seen is assumed)."""
    mode = Mode(settings.mode)
    client = parse_ip(verdict.address)
    request = PolicyRequest(
        RCPT, client, str(client), "", "", sender or "", recipient or "", "", False, False
    )
    out: dict[str, Any] = {
        "mode": mode.value,
        "dry_run": settings.dry_run,
        "learn_after": settings.learn_after,
        "passes": await store.unused_passes(str(client), now),
        "tarpit": None,
        "triplet": None,
    }
    decided: Decision | None = decide.after_verdict(request, verdict, settings)
    if decided is None:
        last = await store.client_tarpit(str(client)) if mode is not Mode.RGREY else None
        if last is not None:
            out["tarpit"] = {
                "started_at": _time(last.started),
                "survived": last.survived,
                "delivered": last.delivered,
                "hung_up": decide.abandoned(last, now, settings.tarpit),
            }
        step = decide.rcpt(mode, request, None, last, slot_free=True, now=now, tarpit=settings.tarpit)
        if isinstance(step, Decision):
            decided = step
        else:
            triplet = Triplet.of(client, request.sender, request.recipient, settings)
            state = await store.triplet(triplet.key) if sender is not None or recipient is not None else None
            if state is not None:
                out["triplet"] = {
                    "network": triplet.network,
                    "sender": triplet.sender,
                    "recipient": triplet.recipient,
                    "first_seen": _time(state.first_seen),
                    "passed_at": _time(state.passed_at),
                }
            decided = decide.greylist(state, now, settings, verdict.txt or "", step.reason)
    out["action"] = decided.action
    out["outcome"] = decided.outcome.value
    out["reason"] = decided.reason
    return out
