"""Bulk jobs over shape libraries: batch embedding into the search index (see embed.py)."""
