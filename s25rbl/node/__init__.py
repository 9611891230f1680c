"""A running node's long-lived parts: lists kept in step with the store (``sync``), the DNS
counters of its processes (``counters``), the extra DNS worker processes (``workers``) and the
event loop they all run on (``runloop``). ``s25rbl.app`` wires them."""
