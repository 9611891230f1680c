"""List files: S25R-style Postfix regexp tables in; Postfix, rbldnsd and JSON out."""

from __future__ import annotations

import pytest

from s25rbl.errors import ListFileError
from s25rbl.lists.formats import parse_list_file
from s25rbl.lists.values import EntryKind, ListName

S25R_WHITE_LIST = r"""
# S25R white_list (as the report writes it)
/\.bay[0-9]*\.hotmail\.com$/          OK
/^mail[0-9]*\.nifty\.com$/            OK
/^web[0-9]+\.mail\.bbt\.yahoo\.co\.jp$/ OK
/^a[0-9]+-[0-9]+\.smtp-out\.amazonses\.com$/ OK
"""

S25R_BLACK = r"""
/\.dip\.t-dialin\.net$/   450 domain check, be patient
/^[0-9a-f]{8}\.example\.net$/ REJECT
/\.dyn\.example\.org$/i    DEFER_IF_PERMIT
"""


def test_s25r_white_list_imports_as_whitelist_regexes() -> None:
    specs = parse_list_file(S25R_WHITE_LIST, None)
    assert len(specs) == 4
    assert {s.list for s in specs} == {ListName.WHITE}
    assert {s.kind for s in specs} == {EntryKind.REGEX}
    assert specs[0].value == r"\.bay[0-9]*\.hotmail\.com$"


def test_450_reject_defer_lines_import_as_blacklist() -> None:
    specs = parse_list_file(S25R_BLACK, None)
    assert [s.list for s in specs] == [ListName.BLACK] * 3
    assert specs[0].reason == "domain check, be patient"


@pytest.mark.parametrize(
    ("line", "default", "list_", "kind", "value"),
    [
        ("192.0.2.1", ListName.WHITE, ListName.WHITE, EntryKind.IP, "192.0.2.1"),
        ("192.0.2.0/24 REJECT", None, ListName.BLACK, EntryKind.CIDR, "192.0.2.0/24"),
        ("example.com OK", None, ListName.WHITE, EntryKind.DOMAIN, "example.com"),
        ("Example.COM  # partner relay", ListName.WHITE, ListName.WHITE, EntryKind.DOMAIN, "example.com"),
        ("example.com\tOK\t# partner", None, ListName.WHITE, EntryKind.DOMAIN, "example.com"),
        ("2001:db8::1 554 go away", None, ListName.BLACK, EntryKind.IP, "2001:db8::1"),
    ],
    ids=["plain-ip", "cidr-reject", "domain-ok", "domain-with-reason", "tabs-and-reason", "ipv6-5xx"],
)
def test_plain_lines(
    line: str, default: ListName | None, list_: ListName, kind: EntryKind, value: str
) -> None:
    (spec,) = parse_list_file(line, default)
    assert (spec.list, spec.kind, spec.value) == (list_, kind, value)


def test_bad_lines_are_all_reported_with_their_numbers_and_nothing_is_returned() -> None:
    text = "/ok\\.example$/ OK\n/(?=x)/ OK\nbad..name OK\n/unclosed OK\n/x/ FROB\nif /x/\n192.0.2.1\n"
    with pytest.raises(ListFileError) as info:
        parse_list_file(text, None)
    numbers = [n for n, _ in info.value.errors]
    assert numbers == [2, 3, 4, 5, 6, 7]
    assert "line 2" in str(info.value) and "refused" in str(info.value)


def test_the_same_entry_twice_in_a_file_is_kept_once() -> None:
    assert len(parse_list_file("example.com OK\nEXAMPLE.com. OK\n", None)) == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("example.com  # partner relay", "partner relay"),
        ("example.com REJECT spam source", "spam source"),
        ("example.com REJECT spam source # since 2026", "spam source since 2026"),
        ("/^dyn-[0-9]+\\.example\\.net$/ OK # their pool", "their pool"),
    ],
    ids=["comment", "action-text", "action-text-and-comment", "regexp-comment"],
)
def test_a_reason_is_the_text_after_an_action_or_after_a_hash(line: str, reason: str) -> None:
    (spec,) = parse_list_file(line, ListName.WHITE)
    assert spec.reason == reason


@pytest.mark.parametrize(
    "line", ["this is garbage", "jp some note", "example.com partner relay", "192.0.2.1 trusted"]
)
def test_a_plain_line_with_extra_words_is_refused_with_its_line_number(line: str) -> None:
    with pytest.raises(ListFileError) as info:
        parse_list_file(f"example.org\n{line}\n", ListName.WHITE)
    ((number, message),) = info.value.errors
    assert number == 2
    assert "extra words after" in message and "# reason" in message


@pytest.mark.parametrize("action", ["HOLD", "DUNNO", "FILTER smtp:[127.0.0.1]:10025", "DISCARD", "WARN"])
@pytest.mark.parametrize("value", ["/^dyn-[0-9]+\\.example\\.net$/", "192.0.2.1", "example.com"])
def test_actions_that_say_nothing_about_the_client_are_refused_alike(value: str, action: str) -> None:
    with pytest.raises(ListFileError) as info:
        parse_list_file(f"{value} {action}\n", None)
    ((number, message),) = info.value.errors
    word = action.split()[0]
    assert number == 1
    assert f"{word!r} is not imported" in message and "OK/PERMIT (whitelist)" in message


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("com OK", "public suffix"),
        ("jp", "public suffix"),
        ("co.jp OK", "public suffix"),
        ("CO.JP. REJECT", "public suffix"),
        ("/./ OK", "unrelated host names"),
        ("/[a-z]/ REJECT", "unrelated host names"),
        ("/^/ OK", "empty string"),
    ],
)
def test_entries_that_would_list_the_world_are_refused(line: str, problem: str) -> None:
    with pytest.raises(ListFileError) as info:
        parse_list_file(f"ocn.ne.jp\n{line}\n", ListName.WHITE)
    ((number, message),) = info.value.errors
    assert number == 2 and problem in message
