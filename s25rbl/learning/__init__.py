"""Learning from retries: sender normalisation, retry detection and pool suggestions (pure logic)."""
