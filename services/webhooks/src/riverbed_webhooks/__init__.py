"""Riverbed webhooks service."""
