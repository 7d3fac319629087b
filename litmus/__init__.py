"""Litmus: experimentation server for ML models."""
