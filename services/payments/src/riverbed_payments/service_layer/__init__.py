"""Use cases over ports: recording payment events, reconciling settlement reports."""
