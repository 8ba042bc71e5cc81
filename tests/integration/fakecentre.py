"""A man in the middle at the node's centre URL: forwards to the real centre (`pass`) or
answers with well-formed frames that are unsigned, wrongly signed, replayed from another
request, or (signed with the node's own key: a leaked key or a centre bug) feeding a bill
of another governorate (`foreign`: the outbox then passes through), or sending the node
elsewhere (`redirect`: a 307 to `redirect_to`, which a node must never follow). A made-up
chain page (GET /v1/nodes/{node}/chain) holds an entry that does not chain on."""

from __future__ import annotations

from email.utils import formatdate

import aiohttp
from aiohttp import web

from sync import answers, chain, protocol
from sync.protocol import Verdict
from sync.snapshot import Sealer, encode_item

MODES = ("pass", "unsigned", "wrong", "replay", "foreign", "redirect")
WRONG_KEY = b"w" * 64


def foreign_bill(version: int = 99) -> dict[str, object]:
    return {
        "bill_id": "ALE-2026-05-0100000001", "account": "0100000001", "governorate": "ALE",
        "cycle": "2026-05", "name": "x", "address": "y", "meter": "EM-1", "kwh": 1,
        "amount": 5, "paid": 0, "due_date": "2026-07-15", "version": version,
        "updated_at": "2026-06-01T00:00:00.000Z", "credit": 0, "fine_paid": 0,
    }  # fmt: skip


def forged_dam_bill(account: str, version: int = 99) -> dict[str, object]:
    """One of the node's own bills, shown as fully paid: what a forger would like applied."""
    return {**foreign_bill(version), "bill_id": f"DAM-2026-05-{account}", "account": account,
            "governorate": "DAM", "amount": 100_000, "paid": 100_000}  # fmt: skip


class FakeCentre:
    def __init__(self, secret: bytes, account: str) -> None:
        self.secret, self.account = secret, account
        self.mode = "pass"
        self.upstream = ""  # the real centre's base URL, set once it runs
        self.forged = 0  # answers made up (not forwarded)
        self.seen = 0  # requests received, whatever the mode
        self.redirect_to = ""  # base URL the `redirect` mode sends the node to
        self._kept: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None
        keep = ("X-Edge-Node", "X-Edge-Key", "X-Edge-Timestamp", "X-Edge-Nonce", "X-Edge-Digest",
                "X-Edge-Signature", "Content-Type")  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k in keep}
        async with self._session.request(
            request.method, self.upstream + request.raw_path, data=body, headers=headers
        ) as resp:
            raw = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k in ("Date", answers.ANSWER_HEADER)}
            return resp.status, raw, out

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        body = await request.read()
        kind = request.path.rsplit("/", 1)[-1]  # outbox, changes or snapshot
        if self.mode == "redirect":
            self.forged += 1
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.raw_path)
        if self.mode == "pass" or (self.mode == "foreign" and kind == "outbox"):
            status, raw, headers = await self._forward(request, body)
            return web.Response(status=status, body=raw, headers=headers)
        if self.mode == "replay":
            if kind not in self._kept:
                # Forward once and keep the genuine answer, but tell the node nothing came.
                self._kept[kind] = await self._forward(request, body)
                return web.Response(status=503, body=protocol.encode_error("busy", "later"))
            self.forged += 1
            status, raw, headers = self._kept[kind]
            return web.Response(status=status, body=raw, headers=headers)
        self.forged += 1
        raw = self._made_up(kind, body, request.query.get("after", "0"))
        date = formatdate(usegmt=True)
        headers = {"Date": date, "Content-Type": protocol.CONTENT_TYPE}
        signature = request.headers.get("X-Edge-Signature", "")
        if self.mode != "unsigned":
            key = self.secret if self.mode == "foreign" else WRONG_KEY
            if kind == "snapshot":
                raw = self._snapshot(key, signature)
            headers[answers.ANSWER_HEADER] = answers.answer_mac(
                key, signature, 200, date, None if kind == "snapshot" else raw
            )
        return web.Response(status=200, body=raw, headers=headers)

    def _made_up(self, kind: str, body: bytes, after: str = "0") -> bytes:
        if kind == "chain":
            # One entry after the node's head that does not chain onto it (a made-up hash).
            seq, made_up = int(after), "f" * 64
            held = chain.Held(seq + 1, f"dam-1_{'0' * 26}", "payment", b"\x80", made_up,
                              made_up, "applied", None, 1, 0, None)  # fmt: skip
            return chain.encode(chain.Page("dam-1", seq + 1, made_up, seq, made_up, [held], False))
        if kind == "outbox":
            batch = protocol.decode_batch(body)
            verdicts = [Verdict(e.seq, e.id, "applied", None, 99) for e in batch.entries]
            return protocol.encode_reply(verdicts, batch.entries[-1].seq if batch.entries else 0)
        bills = [forged_dam_bill(self.account)]
        if self.mode == "foreign":
            bills.append(foreign_bill())
        if kind == "changes":
            return protocol.encode_changes(bills, 10**6, False)
        return self._snapshot(WRONG_KEY, "")

    def _snapshot(self, key: bytes, signature: str) -> bytes:
        bills = [forged_dam_bill(self.account)]
        if self.mode == "foreign":
            bills.append(foreign_bill())
        sealer, page = Sealer(key, signature), b"".join(encode_item(b) for b in bills)
        if self.mode == "unsigned":
            return page + sealer.end(10**6, page, len(bills)).replace(b"mac", b"mak")
        return page + sealer.seal(page, len(bills)) + sealer.end(10**6)
