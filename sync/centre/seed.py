"""Realistic demo bills: 10-digit accounts, Arabic names, Damascus-area addresses, tariffs.

`make_bills` and `cycle_bills` build bills (`seed_bills(conn, ...)` writes them to SQLite); for
an in-process demo use `await seed_database(settings, n, cycle, seed)` before starting the
centre app (see sync.centre.app). The tariff is illustrative, in piastres, per two-month cycle.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import time
from collections.abc import Iterator

from sync.bill import CYCLE
from sync.centre.bills import CHUNK, BillInput, UpsertResult, upsert_bills
from sync.centre.config import CentreSettings
from sync.centre.connect import open_store
from sync.errors import ImportFailed
from sync.progress import Progress

FIRST_NAMES = (
    "محمد", "أحمد", "محمود", "علي", "حسن", "خالد", "عمر", "يوسف", "إبراهيم", "سامر", "باسل",
    "رامي", "فادي", "ماهر", "نزار", "وسيم", "جورج", "إلياس", "طارق", "هيثم", "فاطمة", "مريم",
    "هدى", "رنا", "لينا", "سوسن", "ريم", "نور", "سلمى", "ديما", "رهف", "غادة", "منى", "هالة",
)  # fmt: skip
FATHER_NAMES = (
    "عبد الله", "مصطفى", "سليم", "عبد الرحمن", "ياسين", "عادل", "نبيل", "فؤاد", "سمير", "جميل",
    "ميخائيل", "حسين", "زياد", "بشير", "منير",
)  # fmt: skip
FAMILY_NAMES = (
    "الحلبي", "الشامي", "الدمشقي", "العطار", "القباني", "الخطيب", "الأيوبي", "السمان", "المصري",
    "النوري", "الحمصي", "الزعبي", "الجزائري", "البزم", "الدقر", "الحكيم", "مردم بك", "العظمة",
    "الكردي", "الطباع", "حداد", "صباغ", "خوري", "نحاس", "زيتون", "الرفاعي", "السيد", "شربجي",
)  # fmt: skip
DAMASCUS_AREAS = (
    "المزة", "كفرسوسة", "المالكي", "أبو رمانة", "باب توما", "القصاع", "الميدان", "ركن الدين",
    "المهاجرين", "الشعلان", "برزة", "دمر", "مشروع دمر", "الشاغور", "ساروجة", "القنوات",
    "العدوي", "الصالحية", "التجارة", "القصور", "الزاهرة", "باب سريجة", "المزرعة", "الروضة",
)  # fmt: skip
RURAL_DAMASCUS_AREAS = (
    "جرمانا", "صحنايا", "قدسيا", "دوما", "التل", "الكسوة", "يبرود", "النبك", "الزبداني",
    "داريا", "المعضمية", "ضاحية قدسيا", "عربين", "حرستا", "معربا", "جديدة عرطوز",
)  # fmt: skip
STREETS = (
    "شارع بغداد", "شارع الثورة", "شارع الجلاء", "شارع الحمراء", "شارع خالد بن الوليد",
    "شارع النصر", "شارع فارس الخوري", "شارع المتنبي", "شارع الكندي", "الشارع العام",
    "شارع الشهداء", "شارع المدارس", "شارع الجامع", "شارع الكنيسة", "شارع أبي ذر الغفاري",
)  # fmt: skip
CITIES = {
    "DAM": "دمشق", "RDA": "ريف دمشق", "ALE": "حلب", "HMS": "حمص", "HAM": "حماة", "LAT": "اللاذقية",
    "TAR": "طرطوس", "IDL": "إدلب", "RAQ": "الرقة", "DEZ": "دير الزور", "HAS": "الحسكة",
    "DAR": "درعا", "SWE": "السويداء", "QUN": "القنيطرة",
}  # fmt: skip
# (upper bound of the band in kWh per cycle, SYP per kWh): progressive, like the real tariff.
TARIFF = ((300, 10), (600, 25), (1000, 100), (1500, 200), (None, 600))
METER_FEE_SYP = 500


def bill_amount(kwh: int) -> int:
    """The billed amount in piastres for a cycle's consumption."""
    total, floor = METER_FEE_SYP, 0
    for ceiling, price in TARIFF:
        top = kwh if ceiling is None else min(kwh, ceiling)
        if top > floor:
            total += (top - floor) * price
        if ceiling is None or kwh <= ceiling:
            break
        floor = ceiling
    return total * 100


def due_date(cycle: str) -> str:
    """The 15th of the month after the two-month cycle."""
    year, month = int(cycle[:4]), int(cycle[5:7]) + 2
    if month > 12:
        year, month = year + 1, month - 12
    return f"{year:04d}-{month:02d}-15"


def subscriber(rng: random.Random, governorate: str) -> tuple[str, str]:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(FATHER_NAMES)} {rng.choice(FAMILY_NAMES)}"
    if governorate == "DAM":
        area = rng.choice(DAMASCUS_AREAS)
    elif governorate == "RDA":
        area = rng.choice(RURAL_DAMASCUS_AREAS)
    else:
        area = f"الحي {rng.randint(1, 40)}"
    city = CITIES.get(governorate, governorate)
    street = rng.choice(STREETS)
    address = f"{city}، {area}، {street}، بناء {rng.randint(1, 120)}، طابق {rng.randint(0, 9)}"
    return name, address


def consumption(rng: random.Random) -> int:
    return min(6000, int(rng.lognormvariate(6.1, 0.55)))


def paid_share(rng: random.Random, amount: int) -> int:
    """About 10% of bills fully paid and 15% partly paid, in whole pounds."""
    pick = rng.random()
    if pick < 0.10:
        return amount
    if pick < 0.25 and amount >= 200:
        return rng.randint(1, amount // 100 - 1) * 100
    return 0


def iter_bills(governorate: str, n: int, cycle: str, rng: random.Random) -> Iterator[BillInput]:
    """`n` demo bills of `cycle`, one at a time (the same ones `make_bills` gives)."""
    if not CYCLE.match(cycle):
        raise ImportFailed(f"bad cycle {cycle!r}: use YYYY-MM")
    accounts = rng.sample(range(1_000_000_000, 10_000_000_000), n)
    due = due_date(cycle)
    for account in accounts:
        name, address = subscriber(rng, governorate)
        kwh = consumption(rng)
        amount = bill_amount(kwh)
        yield BillInput(
            account=str(account), cycle=cycle, name=name, address=address,
            meter=f"EM-{rng.randint(10_000_000, 99_999_999)}", kwh=kwh, amount=amount,
            paid=paid_share(rng, amount), due_date=due,
        )  # fmt: skip


def make_bills(governorate: str, n: int, cycle: str, rng: random.Random) -> list[BillInput]:
    return list(iter_bills(governorate, n, cycle, rng))


def seed_bills(
    conn: sqlite3.Connection,
    governorate: str,
    n: int,
    cycle: str,
    rng: random.Random,
    *,
    now: float | None = None,
) -> UpsertResult:
    """Write job: `n` new demo bills of `cycle` for `governorate`."""
    bills = make_bills(governorate, n, cycle, rng)
    return upsert_bills(conn, governorate, bills, time.time() if now is None else now)


def cycle_bills(
    latest: list[tuple[str, str, str, str]], cycle: str, rng: random.Random
) -> list[BillInput]:
    """A bill of `cycle` for each (account, name, address, meter) of the accounts without one
    (the store's `accounts_without_cycle`), with a demo consumption."""
    if not CYCLE.match(cycle):
        raise ImportFailed(f"bad cycle {cycle!r}: use YYYY-MM")
    due = due_date(cycle)
    bills = []
    for account, name, address, meter in latest:
        kwh = consumption(rng)
        bills.append(BillInput(account, cycle, name, address, meter, kwh, bill_amount(kwh), 0, due))
    return bills


async def seed_database(
    settings: CentreSettings, n: int, cycle: str, seed: int | None = None
) -> UpsertResult:
    """Open the centre's database, add `n` demo bills for its governorate, close it again.

    Written in write jobs of `CHUNK` bills (progress shown as they commit); the bills are
    the same whatever the chunking, for one `seed`.
    """
    governorate = settings.require_governorate()
    rng = random.Random(seed)  # noqa: S311 - demo data, not a secret
    made = iter_bills(governorate, n, cycle, rng)
    now, totals = time.time(), UpsertResult(0, 0, 0)
    store = open_store(settings)
    await store.open()
    try:
        with Progress(f"seed {governorate}", n, unit="bills") as progress:
            while chunk := list(itertools.islice(made, CHUNK)):
                done = await store.upsert_bills(governorate, chunk, now)
                totals = UpsertResult(totals.inserted + done.inserted,
                                      totals.updated + done.updated,
                                      totals.unchanged + done.unchanged)  # fmt: skip
                progress.advance(len(chunk))
    finally:
        await store.close()
    return totals
