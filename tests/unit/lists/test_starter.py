"""The shipped starter whitelist: its format, its entries and the loader's refusals."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from publicsuffixlist import PublicSuffixList

from s25rbl.entries import EntryRow
from s25rbl.lists.starter import (
    MAX_REASON,
    StarterEntry,
    StarterFormatError,
    load_starter,
    parse_starter,
)
from s25rbl.store.models import EntryKind, EntrySource, ListName
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.s25r import match_general

ENTRIES = load_starter()

# The 34 entries of s25rbl 0.1.0, with their reasons: kept as they were.
ORIGINAL: dict[str, str] = {
    "google.com": "Gmail / Google Workspace outbound (mail-*.google.com)",
    "hotmail.com": "Hotmail outbound (S25R report example mc1-s3.bay6.hotmail.com)",
    "yahoo.com": "Yahoo! Mail outbound",
    "yahoo.co.jp": "Yahoo! JAPAN outbound (S25R report example web10902.mail.bbt.yahoo.co.jp)",
    "mixi.jp": "mixi outbound (S25R report example)",
    "googlemail.com": "Google outbound",
    "outlook.com": "Microsoft 365 / Outlook.com outbound",
    "protection.outlook.com": "Exchange Online Protection outbound (*.outbound.protection.outlook.com)",
    "yahoodns.net": "Yahoo / AOL outbound (mta*.am0.yahoodns.net)",
    "amazonses.com": "Amazon SES outbound (S25R report example a8-97.smtp-out.amazonses.com)",
    "sendgrid.net": "SendGrid / Twilio outbound",
    "mailgun.net": "Mailgun outbound",
    "mcsv.net": "Mailchimp outbound",
    "rsgsv.net": "Mailchimp outbound",
    "mandrillapp.com": "Mailchimp Transactional (Mandrill) outbound",
    "sparkpostmail.com": "SparkPost outbound",
    "postmarkapp.com": "Postmark outbound",
    "exacttarget.com": "Salesforce Marketing Cloud outbound",
    "messagelabs.com": "Broadcom / Symantec Email Security outbound",
    "pphosted.com": "Proofpoint outbound",
    "mimecast.com": "Mimecast outbound",
    "icloud.com": "Apple iCloud Mail outbound",
    "me.com": "Apple iCloud Mail outbound",
    "facebookmail.com": "Facebook / Meta outbound",
    "linkedin.com": "LinkedIn outbound",
    "zoho.com": "Zoho Mail outbound",
    "protonmail.ch": "Proton Mail outbound",
    "gmx.net": "GMX outbound",
    "web.de": "WEB.DE outbound",
    "yandex.net": "Yandex outbound",
    "mail.ru": "Mail.ru outbound",
    "docomo.ne.jp": "NTT docomo mail outbound",
    "ezweb.ne.jp": "au (KDDI) mail outbound",
    "softbank.ne.jp": "SoftBank mail outbound",
}


def starter_index(entries: Iterable[StarterEntry] = ENTRIES) -> ListIndex:
    """The starter entries as the server loads them: white domain entries."""
    rows = (
        EntryRow(n, ListName.WHITE, EntryKind.DOMAIN, e.domain, EntrySource.BUILTIN)
        for n, e in enumerate(entries, 1)
    )
    return ListIndex.build(rows)


INDEX = starter_index()


def unlisted(name: str, index: ListIndex = INDEX) -> bool:
    return index.white_name([name]) is not None


# --- the file and its entries ---------------------------------------------------------------


def test_the_shipped_file_loads_with_each_group_once() -> None:
    assert len(ENTRIES) >= 34
    seen: list[str] = []
    for entry in ENTRIES:
        if not seen or seen[-1] != entry.group:
            seen.append(entry.group)
    assert len(seen) == len(set(seen))  # each group contiguous


def test_domains_are_unique() -> None:
    domains = [e.domain for e in ENTRIES]
    assert len(set(domains)) == len(domains)


_PSL = PublicSuffixList()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.domain for e in ENTRIES])
def test_entry_is_a_valid_name_and_not_a_public_suffix(entry: StarterEntry) -> None:
    assert not _PSL.is_public(entry.domain)
    assert _PSL.privatesuffix(entry.domain) is not None  # at least one label under a suffix
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", entry.since)
    assert 0 < len(entry.reason) <= MAX_REASON


WITH_EXAMPLE = [e for e in ENTRIES if e.example]


@pytest.mark.parametrize("entry", WITH_EXAMPLE, ids=[e.domain for e in WITH_EXAMPLE])
def test_example_hits_an_s25r_rule_and_is_covered_by_its_entry(entry: StarterEntry) -> None:
    assert match_general(entry.example) is not None, f"{entry.example} is not hit by any S25R rule"
    assert entry.covers(entry.example)
    assert unlisted(entry.example, starter_index([entry]))


@pytest.mark.parametrize(("domain", "reason"), sorted(ORIGINAL.items()), ids=sorted(ORIGINAL))
def test_the_original_entries_are_kept_as_they_were(domain: str, reason: str) -> None:
    (entry,) = [e for e in ENTRIES if e.domain == domain]
    assert (entry.since, entry.reason) == ("0.1.0", reason)


def test_only_the_original_entries_are_from_0_1_0() -> None:
    assert {e.domain for e in ENTRIES if e.since == "0.1.0"} == set(ORIGINAL)


# --- the loader ----------------------------------------------------------------------------------

GOOD = "## G\nexample.com\t0.2.0\tExample outbound\tmail1-2.example.com\n"


def test_parse_reads_groups_comments_and_blank_lines() -> None:
    text = "# comment\n\n## First\na.example\t0.1.0\tA\t\n## Second\n\nb.example\t0.2.0\tB\tx1-2.b.example\n"
    assert parse_starter(text) == (
        StarterEntry("a.example", "0.1.0", "A", "", "First"),
        StarterEntry("b.example", "0.2.0", "B", "x1-2.b.example", "Second"),
    )


def test_load_reads_a_given_path(tmp_path: Path) -> None:
    path = tmp_path / "starter.tsv"
    path.write_text(GOOD, encoding="utf-8")
    (entry,) = load_starter(path)
    assert (entry.domain, entry.group) == ("example.com", "G")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("## G\nexample.com\t0.2.0\tthree columns\n", 2, "expected 4 TAB-separated columns"),
        ("## G\nexample.com 0.2.0 spaces, not tabs\t\n", 2, "expected 4 TAB-separated columns"),
        ("## G\nexample.com\t0.2.0\ta\tb\tc\n", 2, "found 5"),
        ("## G\nExample.com\t0.2.0\tupper case\t\n", 2, "not a lower-case DNS name"),
        ("## G\ncom\t0.2.0\tone label\t\n", 2, "not a lower-case DNS name"),
        ("## G\nexample.com.\t0.2.0\ttrailing dot\t\n", 2, "not a lower-case DNS name"),
        ("## G\n-bad.example\t0.2.0\thyphen first\t\n", 2, "not a lower-case DNS name"),
        ("## G\nex_ample.com\t0.2.0\tunderscore\t\n", 2, "not a lower-case DNS name"),
        (GOOD + "example.com\t0.2.0\tagain\t\n", 3, "duplicate domain 'example.com' (first on line 2)"),
        ("## G\nexample.com\tv0.2\tbad since\t\n", 2, "not a release number"),
        ("## G\nexample.com\t0.2.0\t\t\n", 2, "reason must be"),
        ("## G\nexample.com\t0.2.0\t" + "x" * (MAX_REASON + 1) + "\t\n", 2, "reason must be"),
        ("## G\nexample.com\t0.2.0\tok\tmail.example.net\n", 2, "not a hostname under 'example.com'"),
        ("## G\nexample.com\t0.2.0\tok\tnotexample.com\n", 2, "not a hostname under 'example.com'"),
        ("example.com\t0.2.0\tno group yet\t\n", 1, "before the first '## Group' line"),
        ("# header\n##\nexample.com\t0.2.0\tok\t\n", 2, "needs a title"),
    ],
    ids=[
        "three-columns",
        "spaces-not-tabs",
        "five-columns",
        "upper-case",
        "single-label",
        "trailing-dot",
        "leading-hyphen",
        "underscore",
        "duplicate",
        "bad-since",
        "empty-reason",
        "long-reason",
        "example-elsewhere",
        "example-lookalike",
        "no-group",
        "empty-group-title",
    ],
)
def test_a_malformed_line_is_refused_with_its_number(text: str, line: int, message: str) -> None:
    with pytest.raises(StarterFormatError) as caught:
        parse_starter(text, "starter.tsv")
    assert caught.value.line == line
    assert f"starter.tsv, line {line}: " in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("name", "hit"),
    [
        ("mc1-s3.bay6.hotmail.com", True),
        ("hotmail.com", True),
        ("HOTMAIL.COM.", True),
        ("xhotmail.com", False),
        ("hotmail.com.example", False),
    ],
    ids=["subdomain", "itself", "case-and-root-dot", "lookalike", "as-inner-label"],
)
def test_covers_matches_on_label_boundaries(name: str, hit: bool) -> None:
    entry = StarterEntry("hotmail.com", "0.1.0", "Hotmail outbound", "", "G")
    assert entry.covers(name) is hit
    assert unlisted(name.lower().removesuffix("."), starter_index([entry])) is hit
