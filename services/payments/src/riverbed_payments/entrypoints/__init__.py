"""How the world reaches the service: the HTTP API, its problem details, the CLI."""
