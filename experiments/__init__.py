"""Experiment scripts and their data pipeline (not part of the library)."""
