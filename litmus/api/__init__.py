"""Litmus api layer."""
