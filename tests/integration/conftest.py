"""Fixtures for integration tests: a running node, and a node linked to a real centre."""

from centrefixtures import link
from nodefixtures import running

__all__ = ["link", "running"]
