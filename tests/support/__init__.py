"""Test helpers: a fake authoritative DNS server and its pytest fixtures."""
