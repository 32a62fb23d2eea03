"""Helpers the test suite uses to start real dependencies (PostgreSQL)."""
