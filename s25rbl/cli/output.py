"""How the CLI prints what it was given: explanations and entry tables, or JSON."""

from __future__ import annotations

import json
from typing import Any


def show_explanation(explanation: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(explanation, indent=2))
    else:
        print_explanation(explanation)


def print_explanation(e: dict[str, Any]) -> None:
    state = f'listed {e["code"]}  "{e["txt"]}"' if e["listed"] else "not listed"
    print(f"{e['address']}: {state}")
    print(f"  decided by:     {e['step']}")
    if e["match"]:
        m = e["match"]
        entry = f"#{m['entry_id']} {m['list']}list {m['kind']} {m['value']!r}"
        print(f"  entry:          {entry} (matched {m['matched']})")
    if e["rule"] and not e["match"]:
        print(f"  rule:           {e['rule']}")
    if e.get("name") is not None:
        print("  (judged as a name: no lookups)")
        return
    print(f"  PTR names:      {', '.join(e['ptr_names']) or '-'}")
    print(f"  confirmed:      {', '.join(e['confirmed_names']) or '-'}")
    for note in e["lookup_notes"]:
        print(f"  lookup note:    {note}")
    print(f"  whitelist zone: {e['whitelist_code'] or 'not listed'}")
    print(f"  lookup:         {'cached' if e['cached'] else 'fresh'}")
    if e.get("policy"):
        print_policy(e["policy"])


def print_policy(p: dict[str, Any]) -> None:
    """What the policy service would do with the client's next session (``check IP``)."""
    dry = " (dry run: answers DUNNO)" if p["dry_run"] and p["action"] != "DUNNO" else ""
    print(f"  policy ({p['mode']}): {p['action']}{dry}")
    print(f"    why:          {p['outcome']}: {p['reason']}")
    tarpit = p.get("tarpit")
    if tarpit:
        went = "delivered" if tarpit["delivered"] else "survived" if tarpit["survived"] else None
        went = went or ("hung up" if tarpit["hung_up"] else "in its tarpit")
        print(f"    last tarpit:  {tarpit['started_at']}, {went}")
    triplet = p.get("triplet")
    if triplet:
        passed = f", passed {triplet['passed_at']}" if triplet["passed_at"] else ", not passed yet"
        print(f"    triplet:      {triplet['network']} <{triplet['sender']}> -> <{triplet['recipient']}>")
        print(f"                  first attempt {triplet['first_seen']}{passed}")
    print(f"    passes:       {p['passes']} towards learning (learned after {p['learn_after']})")


def print_entries(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    for e in entries:
        expiry = f" expires {e['expires_at'][:16].replace('T', ' ')}" if e["expires_at"] else ""
        # A builtin entry shows the release whose starter whitelist added it: builtin@0.2.0.
        source = f"{e['source']}@{e['starter_release']}" if e.get("starter_release") else e["source"]
        line = f"{e['id']:>6} {e['list']:<5} {e['kind']:<8} {e['value']:<40} {source:<13}"
        print(f"{line} hits {e['hit_count']}{expiry}  {e['reason']}")


def describe_entry(e: dict[str, Any]) -> str:
    return f"{e['list']}list {e['kind']} {e['value']}"
