"""The starter whitelist: outbound pools of big senders that the S25R rules hit by mistake.

Their PTR names look dynamic (``mc1-s3.bay6.hotmail.com``, ``a8-97.smtp-out.amazonses.com``)
but they are real MTAs that retry. Loaded once, on first start, unless
``[lists] builtin_whitelist = false``; an operator may remove any of them afterwards.
"""

from __future__ import annotations

BUILTIN_WHITELIST: tuple[tuple[str, str], ...] = (
    # The S25R report's own examples.
    ("google.com", "Gmail / Google Workspace outbound (mail-*.google.com)"),
    ("hotmail.com", "Hotmail outbound (S25R report example mc1-s3.bay6.hotmail.com)"),
    ("yahoo.com", "Yahoo! Mail outbound"),
    ("yahoo.co.jp", "Yahoo! JAPAN outbound (S25R report example web10902.mail.bbt.yahoo.co.jp)"),
    ("mixi.jp", "mixi outbound (S25R report example)"),
    # Large senders whose pools greylisting users keep hitting.
    ("googlemail.com", "Google outbound"),
    ("outlook.com", "Microsoft 365 / Outlook.com outbound"),
    ("protection.outlook.com", "Exchange Online Protection outbound (*.outbound.protection.outlook.com)"),
    ("yahoodns.net", "Yahoo / AOL outbound (mta*.am0.yahoodns.net)"),
    ("amazonses.com", "Amazon SES outbound (S25R report example a8-97.smtp-out.amazonses.com)"),
    ("sendgrid.net", "SendGrid / Twilio outbound"),
    ("mailgun.net", "Mailgun outbound"),
    ("mcsv.net", "Mailchimp outbound"),
    ("rsgsv.net", "Mailchimp outbound"),
    ("mandrillapp.com", "Mailchimp Transactional (Mandrill) outbound"),
    ("sparkpostmail.com", "SparkPost outbound"),
    ("postmarkapp.com", "Postmark outbound"),
    ("exacttarget.com", "Salesforce Marketing Cloud outbound"),
    ("messagelabs.com", "Broadcom / Symantec Email Security outbound"),
    ("pphosted.com", "Proofpoint outbound"),
    ("mimecast.com", "Mimecast outbound"),
    ("icloud.com", "Apple iCloud Mail outbound"),
    ("me.com", "Apple iCloud Mail outbound"),
    ("facebookmail.com", "Facebook / Meta outbound"),
    ("linkedin.com", "LinkedIn outbound"),
    ("zoho.com", "Zoho Mail outbound"),
    ("protonmail.ch", "Proton Mail outbound"),
    ("gmx.net", "GMX outbound"),
    ("web.de", "WEB.DE outbound"),
    ("yandex.net", "Yandex outbound"),
    ("mail.ru", "Mail.ru outbound"),
    ("docomo.ne.jp", "NTT docomo mail outbound"),
    ("ezweb.ne.jp", "au (KDDI) mail outbound"),
    ("softbank.ne.jp", "SoftBank mail outbound"),
)
