"""s25rbl: the S25R (Selective SMTP Rejection) reputation service as a DNSBL/DNSWL."""

__version__ = "0.1.0"
