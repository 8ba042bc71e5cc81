"""Power: the NUT client, UPS sources, the upsmon-style policy, the monitor loop, power history."""
