"""Subs."""
