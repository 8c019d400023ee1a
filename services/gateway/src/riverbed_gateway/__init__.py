"""Riverbed gateway service."""
