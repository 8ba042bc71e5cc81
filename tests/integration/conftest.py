"""Fixtures for integration tests: a running node (nodefixtures) and, for centre tests, a centre."""

from nodefixtures import running

__all__ = ["running"]
