"""Riverbed email service."""
