"""The CPU speed layer (filled in below)."""
