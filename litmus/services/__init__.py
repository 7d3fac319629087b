"""Litmus services layer."""
