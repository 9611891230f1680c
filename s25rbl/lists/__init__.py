"""The lists: what an entry is (``values``), the files they come in and go out as
(``formats``), where a name stands in the DNS tree (``domains``), and the starter whitelist."""
