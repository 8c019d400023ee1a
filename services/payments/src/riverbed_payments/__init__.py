"""Riverbed payments service."""
