"""The reference centre: the protocol's executable specification, for tests and the demo.

Programmatic use: `CentreSettings(...)`, `seed.seed_database(...)`, then `app.create_app`
run under a `web.AppRunner` (see sync.centre.app). The CLI is `edge centre ...` (cli.py).
"""
