"""The Postfix policy service (product §7): Rgrey, Starpit and taRgrey on the node's verdicts.

``protocol`` reads and writes the policy-delegation wire format; ``decide`` makes the
decisions as plain code; ``state`` remembers what a node may keep in memory and asks the store
for the rest; ``handler`` answers one request with them; ``server`` owns the sockets.
"""
