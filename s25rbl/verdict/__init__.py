"""The verdict: the S25R rules, the in-memory lists and the ordered pipeline of product §4."""
