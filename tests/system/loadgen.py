"""Cashier clients for system tests: each payment has its key, retried with it until answered."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Cashiers:
    url: str
    token: str
    bills: list[str]
    rng: random.Random
    acked: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> payment_id
    amounts: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (bill, amount)
    replayed: int = 0
    refused: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, clients: int) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, n) for n in range(clients)))

    async def _client(self, session: aiohttp.ClientSession, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            key = f"c{n}-{i}"
            bill, amount = self.rng.choice(self.bills), self.rng.randint(100, 1000)
            self.amounts[key] = (bill, amount)
            # A cashier whose request failed resends the same key until it gets an answer,
            # even across the node's crash and restart.
            while True:
                try:
                    async with session.post(
                        f"{self.url}/v1/payments",
                        json={
                            "bill_id": bill,
                            "amount": amount,
                            "method": "cash",
                            "cashier": f"c{n}",
                        },
                        headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": key},
                    ) as resp:
                        body = await resp.json(content_type=None)
                        if resp.status == 201:
                            if resp.headers.get("Idempotent-Replayed") == "true":
                                self.replayed += 1
                            previous = self.acked.setdefault(key, body["payment_id"])
                            assert previous == body["payment_id"], f"key {key} got two payments"
                        else:
                            assert resp.status < 500, body
                            self.refused += 1
                            self.amounts.pop(key)
                        break
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    await asyncio.sleep(0.05)
