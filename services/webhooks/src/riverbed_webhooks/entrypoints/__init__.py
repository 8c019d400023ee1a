"""Entry points: the HTTP API, the stream handlers, the command line."""
