"""What the reporter tests share: real Postfix reject lines, and a saved position."""

from __future__ import annotations

from pathlib import Path

from s25rbl.reporter.logfile import LogFile
from s25rbl.reporter.state import Position

# Lines as Postfix writes them. The first four are verbatim from the repository's Postfix
# lab (tests/integration/test_postfix.py: Postfix 3.x with maillog_file and the shipped
# rbl_reply); the others follow the same smtpd log_whatsup() format.
R = "NOQUEUE: reject: RCPT from"
REAL_BL = (
    "Nov 23 22:00:29 mx postfix/smtpd[9806]: NOQUEUE: reject: RCPT from p1234-ipad12.tokyo.ocn.ne.jp"
    "[198.51.100.7]: 450 4.7.1 Service unavailable; Client host [198.51.100.7] blocked using "
    "bl.s25rbl.test; S25R check, be patient [r1]; from=<sender@example.org> to=<user@example.test> "
    "proto=SMTP helo=<p1234-ipad12.tokyo.ocn.ne.jp>"
)
REAL_REVERSE = (
    "Nov 23 22:00:36 mx postfix/smtpd[10261]: NOQUEUE: reject: RCPT from p1234-ipad12.tokyo.ocn.ne.jp"
    "[198.51.100.7]: 450 4.7.1 Service unavailable; Unverified Client host [p1234-ipad12.tokyo.ocn.ne.jp] "
    "blocked using hl.s25rbl.test; S25R check, be patient [r1]; from=<sender@example.org> "
    "to=<user@example.test> proto=SMTP helo=<relay.example.org>"
)
REAL_HELO = (
    "Nov 23 22:00:33 mx postfix/smtpd[9977]: NOQUEUE: reject: RCPT from mail.example.org[198.51.100.8]: "
    "450 4.7.1 Service unavailable; Helo command [dhcp1234.pool.example.net] blocked using hl.s25rbl.test; "
    "S25R check, be patient [r6]; from=<sender@example.org> to=<user@example.test> proto=SMTP "
    "helo=<dhcp1234.pool.example.net>"
)
REAL_UNKNOWN = (
    "Nov 23 22:00:36 mx postfix/smtpd[10264]: NOQUEUE: reject: RCPT from unknown[198.51.100.10]: 450 4.7.1 "
    "Service unavailable; Client host [198.51.100.10] blocked using bl.s25rbl.test; reverse lookup "
    "failure, be patient; from=<sender@example.org> to=<user@example.test> proto=SMTP helo=<mail.example.org>"
)

# (line, kind, expected fields: client_ip, client_name, helo, sender, recipient, time ISO UTC)


def saved_position(log: Path, lines_done: int) -> Position:
    """The position a reporter would have saved after ``lines_done`` lines."""
    logfile = LogFile(str(log), follow=False)
    logfile.start(None)
    for _ in range(lines_done):
        assert logfile.read_line() is not None
    position = logfile.position()
    logfile.close()
    assert position is not None
    return position
