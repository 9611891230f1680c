"""Shipped list data (the starter whitelist) and its loader."""
