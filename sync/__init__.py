"""Everything that crosses the link to the centre: protocol, replayer, puller, link state.

Imports `outbox` only; never `edge`.
"""
