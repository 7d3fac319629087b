"""Litmus db layer."""
