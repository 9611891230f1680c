"""Upstream DNS lookups: the Resolver protocol and its clients."""
