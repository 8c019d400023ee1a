"""Adapters: the ports' implementations over SQL, Redis and HTTP."""
