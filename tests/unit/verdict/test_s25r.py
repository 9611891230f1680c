"""The six S25R general rules on real-world-style hostnames: the first rule that matches wins.

Each expected rule number was worked out by hand from the published regexes (in order 1..6),
so a change to a pattern or to the matching order shows up here as a named case.
"""

from __future__ import annotations

import pytest

from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.verdict.lists import ListIndex, RuleIndex
from s25rbl.verdict.s25r import GENERAL_RULES, match_general

# product.md section 1: the false positives the S25R texts name, with the rule each hits.
PRODUCT_EXAMPLES: list[tuple[str, int]] = [
    # "mc1-s3": 1, "-s", 3 inside the first label, and a dot follows.
    ("mc1-s3.bay6.hotmail.com", 1),
    # "a8-97": 8, "-", 9.
    ("a8-97.smtp-out.amazonses.com", 1),
    # "web10902": no non-digit between digits (not r1), but five digits in a row.
    ("web10902.mail.bbt.yahoo.co.jp", 2),
]

# (hostname, first rule number that matches, or None). The trailing comment says why.
CASES: list[tuple[str, int | None]] = [
    # --- Japan: consumer pools ---------------------------------------------------------------
    ("p1234-ipngn100101osakakita.osaka.ocn.ne.jp", 1),  # 4 "-ipngn" 1
    ("p5a1b2c3.tkyea100.ap.so-net.ne.jp", 1),  # 5 "a" 1
    ("softbank126012034056.bbtec.net", 2),  # only a digit run: no r1; 5+ digits
    ("kd111239000001.au-net.ne.jp", 2),  # digit run
    ("kd059132123045.ppp-bb.dion.ne.jp", 2),  # digit run
    ("fp76f0a1b2.tkyc201.ap.nuro.jp", 1),  # 6 "f" 0
    ("i121-115-22-33.s41.a013.ap.plala.or.jp", 1),  # 1 "-" 1
    ("ntkyto012034.kyto.nt.ftth.ppp.infoweb.ne.jp", 2),  # "012034"
    ("pl12345.ag1212.nttpc.ne.jp", 2),  # "12345"
    ("flh1abc123.tky.mesh.ad.jp", 1),  # 1 "abc" 1
    ("h219-110-12-34.catv02.itscom.jp", 1),  # 9 "-" 1
    ("zaq3d2e1f0a.zaq.ne.jp", 1),  # 3 "d" 2
    ("em114-48-12-34.pool.e-mobile.ne.jp", 1),  # 4 "-" 4
    ("sp49-98-12-34.msc.spmode.ne.jp", 1),  # 9 "-" 9
    ("122x210x12x34.ap122.ftth.ucom.ne.jp", 1),  # 2 "x" 2
    ("om126033012034.30.openmobile.ne.jp", 2),  # digit run
    ("pw126236012034.10.panda-world.ne.jp", 2),  # digit run
    ("s1234567.xgsspn.imtp.tachikawa.spmode.ne.jp", 2),  # "12345"
    # --- United States ------------------------------------------------------------------------
    ("c-73-162-12-34.hsd1.ca.comcast.net", 1),  # 3 "-" 1
    ("pool-71-105-12-34.lsanca.fios.verizon.net", 1),
    ("static-68-236-12-34.nwrk.east.verizon.net", 1),
    ("cpe-76-175-12-34.socal.res.rr.com", 1),
    ("adsl-99-12-34-56.dsl.irvnca.sbcglobal.net", 1),  # r6 would match too; r1 comes first
    ("99-12-34-56.lightspeed.irvnca.sbcglobal.net", 1),
    ("h69-130-12-34.mdsnwi.dsl.dynamic.tds.net", 1),
    ("ip68-4-12-34.oc.oc.cox.net", 1),  # 8 "-" 4
    ("d14-69-12-34.try.wideopenwest.com", 1),
    ("075-132-012-034.res.spectrum.com", 1),
    ("24-181-12-34.dhcp.hckr.nc.charter.com", 1),
    ("dsl093-001-002.sfo1.dsl.speakeasy.net", 1),  # 3 "-" 0
    # --- Canada -------------------------------------------------------------------------------
    ("bas1-toronto12-1234567890.dsl.bell.ca", 1),  # 1 "-toronto" 1
    ("s0106001122334455.cg.shawcable.net", 2),  # digit run
    ("d75-156-12-34.abhsia.telus.net", 1),
    ("cpe00112233aabb-cm00112233aabc.cpe.net.cable.rogers.com", 1),  # 3 "aabb-cm" 0
    # --- Europe -------------------------------------------------------------------------------
    ("p5b0a1c2d.dip0.t-ipconnect.de", 1),  # 5 "b" 0
    ("pd9e12345.dip0.t-ipconnect.de", 1),  # 9 "e" 1 (before the five-digit run)
    ("p54a1b2c3.dip.t-dialin.net", 1),  # 4 "a" 1
    # Hex label with a single digit: escapes every rule; this is why operators list
    # /\.dip\.t-dialin\.net$/ by hand.
    ("pd9ffabcd.dip.t-dialin.net", None),
    ("ALyon-652-1-123-45.w90-12.abo.wanadoo.fr", 1),  # 2 "-" 1
    ("lfbn-ncy-1-123-45.w86-12.abo.wanadoo.fr", 1),
    ("amontpellier-654-1-12-34.w92-13.abo.wanadoo.fr", 1),
    ("mtl93-1-82-12-34-56.fbx.proxad.net", 1),
    # Telefonica: the first label is all digits (no r1/r2), the second has letters, then
    # ".dynamicip.rima-tde" and ".n": r3.
    ("12.red-83-45-67.dynamicip.rima-tde.net", 3),
    ("93.red-88-12-34.staticip.rima-tde.net", 3),
    ("host81-12-34-56.range81-12.btcentralplus.com", 1),
    ("cpc1-brnt1-2-0-cust123.4-2.cable.virginm.net", 1),  # 1 "-brnt" 1
    ("dslb-178-012-034-056.178.012.pools.vodafone-ip.de", 1),
    ("xdsl-81-173-12-34.netcologne.de", 1),
    ("ip-88-152-12-34.hsi03.unitymediagroup.de", 1),
    ("ip5f5b1234.dynamic.kabel-deutschland.de", 1),  # 5 "f" 5
    ("93-45-12-34.ip.fastwebnet.it", 1),
    ("host12-34-dynamic.56-79-r.retail.telecomitalia.it", 1),
    ("dynamic-adsl-94-36-12-34.clienti.tiscali.it", 1),
    ("ua-83-227-12-34.bbcust.telenor.se", 1),
    ("broadband-95-84-12-34.ip.moscow.rt.ru", 1),
    ("ppp-94-64-12-34.home.otenet.gr", 1),
    ("bzq-79-180-12-34.red.bezeqint.net", 1),
    # --- hosting / cloud ----------------------------------------------------------------------
    ("ec2-54-12-34-56.compute-1.amazonaws.com", 1),  # 2 "-" 5
    ("li123-45.members.linode.com", 1),  # 3 "-" 4
    ("vps12345.ovh.net", 2),  # "12345"
    # "static." is the optional first label; "12" starts with a digit; r3.
    ("static.12.34.56.78.clients.your-server.de", 3),
    ("1.2.3.4.static.example.com", 3),  # "1" starts with a digit, many labels follow
    # --- rule 4: first label ends in a digit, second holds digit-hyphen-digit -----------------
    ("cust4.p10-200.dynamic.example.net", 4),
    ("wcs1.g2-5.dsl.example.at", 4),
    # --- rule 5: first two labels end in digits, three or more labels follow ------------------
    ("ppp1.tky2.isp.example.jp", 5),  # r6 would match too; r5 comes first
    ("mail2.osaka1.dsl.example.ne.jp", 5),
    ("mail1.s1.example.ne.jp", 5),
    ("mx2.mail3.hosting.example.com", 5),
    # --- rule 6: dhcp/dialup/ppp/*dsl prefix with a digit in the first label ------------------
    ("dhcp123.example.net", 6),
    ("ppp42.isp.example.com", 6),
    ("adsl7.provider.it", 6),
    ("xdsl-2.example.pl", 6),  # only one digit: not r1
    ("dialup45.ras.example.net", 6),
    ("vdsl1.example.de", 6),
    ("ppp.example.net", None),  # no digit in the first label
    ("dhcp.example.net", None),
    ("dsl-static.example.net", None),
    # --- big senders: legitimate, but some hit the rules (the whitelist's job) ----------------
    ("mail-wr1-f54.google.com", 1),  # 1 "-f" 5
    ("mail-oi1-f170.google.com", 1),
    ("mail-eopbgr80053.outbound.protection.outlook.com", 2),  # "80053"
    ("mail-tyzapc01on2101.outbound.protection.outlook.com", 1),  # 1 "on" 2
    ("a27-12.smtp-out.us-west-2.amazonses.com", 1),
    ("nm12-vm0.bullet.mail.ne1.yahoo.com", 1),  # 2 "-vm" 0
    ("sonic301-21.consmr.mail.ne1.yahoo.com", 1),
    ("66-220-155-178.mail-mail.facebook.com", 1),
    ("mx1-2.example.com", 1),  # 1 "-" 2
    ("host.3f.example.co.jp", 3),  # second label starts with a digit
    ("mail.2nd.example.co.jp", 3),
    # --- legitimate mail servers the rules leave alone ----------------------------------------
    ("mail.example.org", None),
    ("smtp.gmail.com", None),
    ("mx1.example.co.jp", None),  # one digit only; second label has no digit
    ("mta5.am0.yahoodns.net", None),  # r5 needs one more label after "yahoodns"
    ("o1.email.sendgrid.net", None),
    ("out1.mail.example.net", None),
    ("mail2.example.co.jp", None),
    ("mx01.mail.example.com", None),
    ("smtp-relay.example.org", None),
    ("relay-3.example.com", None),  # one digit only
    ("mout.kundenserver.de", None),
    ("server1.example.com", None),
    ("3com.example.com", None),  # starts with a digit but too few labels follow for r3
    ("mx.example.com", None),
    ("smtp.mail.yahoo.co.jp", None),
]


def _ids(cases: list[tuple[str, int | None]]) -> list[str]:
    return [f"{name}->r{rule}" if rule else f"{name}->none" for name, rule in cases]


@pytest.mark.parametrize(("hostname", "rule"), PRODUCT_EXAMPLES, ids=_ids(list(PRODUCT_EXAMPLES)))
def test_product_examples(hostname: str, rule: int) -> None:
    assert match_general(hostname) == rule


@pytest.mark.parametrize(("hostname", "rule"), CASES, ids=_ids(CASES))
def test_real_world_hostnames(hostname: str, rule: int | None) -> None:
    assert match_general(hostname) == rule


def test_table_is_large_and_unique() -> None:
    names = [name for name, _ in CASES]
    assert len(names) >= 60
    assert len(set(names)) == len(names)
    # Every rule, and "no rule", is exercised.
    assert {rule for _, rule in CASES} == {1, 2, 3, 4, 5, 6, None}


@pytest.mark.parametrize(
    ("hostname", "rule"),
    [
        ("MC1-S3.BAY6.HOTMAIL.COM", 1),
        ("Web10902.Mail.BBT.Yahoo.Co.JP", 2),
        ("HOST.3F.EXAMPLE.CO.JP", 3),  # [a-z] must match "J"
        ("CUST4.P10-200.DYNAMIC.EXAMPLE.NET", 4),
        ("PPP1.TKY2.ISP.EXAMPLE.JP", 5),
        ("DHCP123.EXAMPLE.NET", 6),  # the literal prefixes must match upper case
        ("ADSL7.Provider.IT", 6),
        ("MAIL.EXAMPLE.ORG", None),
    ],
    ids=["r1", "r2", "r3", "r4", "r5", "r6-dhcp", "r6-adsl", "none"],
)
def test_case_insensitive(hostname: str, rule: int | None) -> None:
    assert match_general(hostname) == rule


@pytest.mark.parametrize(
    ("hostname", "rule"),
    [
        # With the dot kept, r5's final "\." would match the root dot after "net".
        ("mta5.am0.yahoodns.net.", None),
        ("mc1-s3.bay6.hotmail.com.", 1),
        ("dhcp123.example.net.", 6),
        ("mail.example.org.", None),
    ],
    ids=["no-r5-from-root-dot", "r1", "r6", "none"],
)
def test_trailing_dot_ignored(hostname: str, rule: int | None) -> None:
    assert match_general(hostname) == rule
    assert match_general(hostname.rstrip(".")) == rule


def _rules(*operator: str) -> RuleIndex:
    """The rule index the verdict uses, with operator rules as list entries (ids 1, 2, ...)."""
    rows = [
        EntryRow(n, ListName.BLACK, EntryKind.RULE, p, EntrySource.MANUAL) for n, p in enumerate(operator, 1)
    ]
    return ListIndex.build(rows).rules


def test_operator_rules_run_after_general_rules() -> None:
    rules = _rules(r"^bad\.")
    assert match_general("bad.example.com") is None
    hit = rules.match("bad.example.com")
    assert hit is not None
    label, pattern, row = hit
    assert (label, pattern) == ("rule1", r"^bad\.")
    assert row is not None and row.id == 1
    # A name both kinds match reports the general rule: they come first.
    assert rules.match("bad.3f.example.co.jp") == ("r3", GENERAL_RULES[2][1], None)
    assert rules.match("mc1-s3.bay6.hotmail.com") == ("r1", r"^[^.]*[0-9][^0-9.]+[0-9].*\.", None)
    assert rules.match("mail.example.org") is None


def test_operator_rules_are_case_insensitive() -> None:
    upper = _rules(r"^BAD\.").match("bad.example.com")
    assert upper is not None and upper[0] == "rule1"


def test_without_operator_rules_only_the_general_rules_list() -> None:
    rules = _rules()
    assert rules.match("bad.example.com") is None
    hit = rules.match("dhcp123.example.net")
    assert hit is not None and hit[0] == "r6"


def test_general_rules_are_the_published_ones() -> None:
    # Written out from product.md section 1, character for character.
    assert GENERAL_RULES == (
        (1, r"^[^.]*[0-9][^0-9.]+[0-9].*\."),
        (2, r"^[^.]*[0-9]{5}"),
        (3, r"^([^.]+\.)?[0-9][^.]*\.[^.]+\..+\.[a-z]"),
        (4, r"^[^.]*[0-9]\.[^.]*[0-9]-[0-9]"),
        (5, r"^[^.]*[0-9]\.[^.]*[0-9]\.[^.]+\..+\."),
        (6, r"^(dhcp|dialup|ppp|[achrsvx]?dsl)[^.]*[0-9]"),
    )
