"""Use cases: endpoint management, fan-out, delivery, replay; they talk to ports only."""
