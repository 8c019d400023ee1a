"""The gateway's rules: what an API key grants, which events are accepted and how they are
built, providers' webhooks verified and normalised. No I/O, no framework."""
