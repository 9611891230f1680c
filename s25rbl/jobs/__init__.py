"""Scheduled work in ``serve``: expiry of state that can no longer count (APScheduler 3.x)."""
