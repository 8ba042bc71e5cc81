"""The governorate edge node: mirror, payments, API, power policy, dashboard and CLI."""

__version__ = "0.1.0"
