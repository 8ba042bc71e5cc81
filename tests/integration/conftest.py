"""Fixtures for integration tests: a running node, a node linked to a real centre, and a
headless Chromium with a page for the browser tests."""

from browser import chromium, page
from centrefixtures import link
from nodefixtures import running

__all__ = ["chromium", "link", "page", "running"]
