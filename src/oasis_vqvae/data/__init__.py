"""Data sources and the sharded slice dataset."""
