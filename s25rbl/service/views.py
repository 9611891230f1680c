"""The JSON shape of what the store holds, the same for the API, the CLI and the page."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from s25rbl.lists.formats import entry_dict
from s25rbl.service.learning import LearnedPage
from s25rbl.store.models import (
    AuditEvent,
    GreylistTriplet,
    LearnBlock,
    PolicyPass,
    Report,
    Suggestion,
    TarpitRecord,
)

__all__ = [
    "answer_text",
    "audit_dict",
    "entry_dict",
    "forbidden_dict",
    "learned_dicts",
    "pass_dict",
    "report_dict",
    "suggestion_dict",
    "tarpit_dict",
    "triplet_dict",
]


def report_dict(r: Report) -> dict[str, Any]:
    """A report as evidence: what the reporter claimed (``time``, ``client_name``, ``helo``)
    beside what s25rbl saw (``received_at``; ``answer``, its blocklist answer for the address
    then; ``confirmed_name``; ``counts``, whether it counts towards learning)."""
    return {
        "time": r.reported_at.isoformat(),
        "received_at": r.received_at.isoformat(),
        "client_ip": r.client_ip,
        "client_name": r.client_name,
        "helo": r.helo,
        "sender": r.sender,
        "recipient": r.recipient,
        "reporter": r.reporter,
        "answer": answer_text(r.code),
        "confirmed_name": r.confirmed_name,
        "counts": r.counts,
    }


def answer_text(code: int) -> str:
    """s25rbl's blocklist answer by its code: ``127.0.0.2``, ``not listed``, ``not judged``."""
    if code < 0:
        return "not judged"
    return f"127.0.0.{code}" if code else "not listed"


def forbidden_dict(b: LearnBlock) -> dict[str, Any]:
    return {
        "ip": b.ip,
        "reason": b.reason,
        "created_at": b.created_at.isoformat(),
        "created_by": b.created_by,
    }


def learned_dicts(page: LearnedPage) -> list[dict[str, Any]]:
    """Each learned entry with its evidence: the reports, and the policy service's passes."""
    return [
        {
            **entry_dict(e),
            "evidence": [report_dict(r) for r in page.evidence.get(e.id, ())],
            "passes": [pass_dict(p) for p in page.passes.get(e.id, ())],
        }
        for e in page.entries
    ]


def suggestion_dict(s: Suggestion) -> dict[str, Any]:
    return {
        "id": s.id,
        "domain": s.domain,
        "status": s.status,
        "evidence": json.loads(s.evidence),
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
        "entry_id": s.entry_id,
    }


def audit_dict(e: AuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
    }


# --- the policy service's state (product §7) ---------------------------------------------


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def triplet_dict(t: GreylistTriplet) -> dict[str, Any]:
    return {
        "id": t.id,
        "network": t.network,
        "sender": t.sender,
        "recipient": t.recipient,
        "client_ip": t.client_ip,
        "status": "waiting" if t.passed_at is None else "passed",
        "first_seen": t.first_seen.isoformat(),
        "last_seen": t.last_seen.isoformat(),
        "passed_at": _when(t.passed_at),
    }


def tarpit_dict(r: TarpitRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "client_ip": r.client_ip,
        "client_name": r.client_name,
        "instance": r.instance,
        "sender": r.sender,
        "recipient": r.recipient,
        "mta": r.mta,
        "started_at": r.started_at.isoformat(),
        "survived_at": _when(r.survived_at),
        "delivered_at": _when(r.delivered_at),
    }


def pass_dict(p: PolicyPass) -> dict[str, Any]:
    return {
        "kind": p.kind,
        "time": p.at.isoformat(),
        "client_ip": p.client_ip,
        "client_name": p.client_name,
        "helo": p.helo,
        "sender": p.sender,
        "recipient": p.recipient,
        "learned_at": _when(p.learned_at),
    }
