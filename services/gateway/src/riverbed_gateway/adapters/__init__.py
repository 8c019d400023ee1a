"""The gateway's adapters: Redis implementations of the ports its use cases need."""
