"""The templates of the demo math problems, five levels (see `persyn.demo.math_problems`). Each
draws its numbers from the generator it is given, computes the answer exactly (`Fraction`), and
returns the text, the answer and an arithmetic expression over the numbers in the text, or None
to be drawn again. An answer that is not a clean number (negative, or more than two decimals) is
refused by the generator, which then draws again, so a template checks only what it formats."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from persyn.demo.math_vocabulary import COLOURS, CONTAINERS, GOODS, ITEMS, NAMES, SUBJECTS, VEHICLES


def format_number(x: Fraction | int) -> str:
    """An exact number as people write it: 12, 12.5, 0.75 (at most two decimal places)."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    cents = x * 100
    if cents.denominator != 1:
        raise ValueError(f"{x} is not a clean decimal")
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents.numerator), 100)
    return f"{sign}{whole}.{frac:02d}".rstrip("0")


def _clean(x: Fraction) -> bool:
    return x >= 0 and (x * 100).denominator == 1


def _money(x: Fraction | int) -> str:
    x = Fraction(x)
    return f"${x.numerator}" if x.denominator == 1 else f"${float(x):.2f}"


@dataclass
class _Draft:
    text: str
    answer: Fraction
    expression: str


Template = Callable[[random.Random], "_Draft | None"]


def _n(x: Fraction | int) -> str:
    return format_number(Fraction(x))


def _pick2(rng: random.Random, seq: Sequence[str]) -> tuple[str, str]:
    a, b = rng.sample(list(seq), 2)
    return a, b


# ----------------------------------------------------------------------------- level 1


def _l1_add(r: random.Random) -> _Draft:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(3, 500), r.randint(2, 300)
    return _Draft(
        f"{name} has {a} {items}. {name} gets {b} more {items}. How many {items} does {name} have now?",
        Fraction(a + b),
        f"{a} + {b}",
    )


def _l1_sub(r: random.Random) -> _Draft:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(10, 600)
    b = r.randint(1, a - 1)
    return _Draft(
        f"{name} had {a} {items} and gave away {b} of them. How many {items} does {name} have left?",
        Fraction(a - b),
        f"{a} - {b}",
    )


def _l1_mul(r: random.Random) -> _Draft:
    (_, items), box = r.choice(ITEMS), r.choice(CONTAINERS)
    a, b = r.randint(2, 40), r.randint(2, 60)
    boxes = box + ("es" if box.endswith("x") else "s")
    return _Draft(
        f"There are {a} {boxes} with {b} {items} in each {box}. How many {items} are there in total?",
        Fraction(a * b),
        f"{a} * {b}",
    )


def _l1_div(r: random.Random) -> _Draft:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    each, k = r.randint(2, 50), r.randint(2, 20)
    total = each * k
    return _Draft(
        f"{name} shares {total} {items} equally among {k} friends. How many {items} does each friend get?",
        Fraction(each),
        f"{total} / {k}",
    )


def _l1_rate(r: random.Random) -> _Draft:
    name = r.choice(NAMES)
    per, days = r.randint(3, 80), r.randint(2, 30)
    what = r.choice(
        [
            ("reads", "pages"),
            ("walks", "blocks"),
            ("writes", "lines"),
            ("swims", "laps"),
            ("practises", "scales"),
            ("plants", "seedlings"),
        ]
    )
    return _Draft(
        f"{name} {what[0]} {per} {what[1]} every day. How many {what[1]} does {name} finish in {days} days?",
        Fraction(per * days),
        f"{per} * {days}",
    )


# ----------------------------------------------------------------------------- level 2


def _l2_change(r: random.Random) -> _Draft | None:
    name, good = r.choice(NAMES), r.choice(GOODS)
    k = r.randint(2, 9)
    price = Fraction(r.randint(2, 60) * 4 + r.choice([0, 1, 2, 3]), 4)  # quarters of a dollar
    bill = r.choice([20, 50, 100, 200])
    if k * price > bill:
        return None
    return _Draft(
        f"{name} buys {k} {good}s at {_money(price)} each and pays with a ${bill} bill. "
        f"How many dollars of change does {name} get?",
        bill - k * price,
        f"{bill} - {k} * {_n(price)}",
    )


def _l2_giveaway(r: random.Random) -> _Draft | None:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    c, b = r.randint(2, 12), r.randint(2, 25)
    a = r.randint(b * c, b * c + 300)
    return _Draft(
        f"{name} has {a} {items} and gives {b} {items} to each of {c} friends. How many {items} are left?",
        Fraction(a - b * c),
        f"{a} - {b} * {c}",
    )


def _l2_wages(r: random.Random) -> _Draft:
    name = r.choice(NAMES)
    rate = Fraction(r.randint(16, 90), 2)
    hours, bonus = r.randint(3, 45), r.randint(5, 200)
    return _Draft(
        f"{name} earns {_money(rate)} per hour, works {hours} hours this week and gets a ${bonus} bonus. "
        f"How many dollars does {name} earn this week?",
        rate * hours + bonus,
        f"{_n(rate)} * {hours} + {bonus}",
    )


def _l2_seats(r: random.Random) -> _Draft | None:
    rows, per = r.randint(4, 40), r.randint(6, 30)
    empty = r.randint(1, rows * per - 1)
    place = r.choice(["theatre", "lecture hall", "stadium section", "cinema", "concert hall", "church"])
    return _Draft(
        f"A {place} has {rows} rows of {per} seats. At a show, {empty} seats are empty. "
        "How many seats are taken?",
        Fraction(rows * per - empty),
        f"{rows} * {per} - {empty}",
    )


def _l2_pack(r: random.Random) -> _Draft | None:
    (_, i1), (_, i2) = r.sample(ITEMS, 2)
    k = r.randint(3, 24)
    bags = r.randint(2, 40)
    a = r.randint(1, k * bags - 1)
    b = k * bags - a
    box = r.choice(CONTAINERS)
    return _Draft(
        f"A shop packs {a} {i1} and {b} {i2} into {box}s that hold {k} items each, filling every {box}. "
        f"How many {box}s does it fill?",
        Fraction(bags),
        f"({a} + {b}) / {k}",
    )


# ----------------------------------------------------------------------------- level 3


def _l3_fraction(r: random.Random) -> _Draft:
    name, (_, items), colour = r.choice(NAMES), r.choice(ITEMS), r.choice(COLOURS)
    den = r.choice([2, 3, 4, 5, 6, 8, 10, 12])
    num = r.randint(1, den - 1)
    a = den * r.randint(2, 40)
    return _Draft(
        f"{name} has {a} {items}, and {num}/{den} of them are {colour}. "
        f"How many of the {items} are not {colour}?",
        a - Fraction(a * num, den),
        f"{a} - {a} * {num} / {den}",
    )


def _l3_discount(r: random.Random) -> _Draft | None:
    good = r.choice(GOODS)
    price = Fraction(r.randint(8, 400))
    d = r.choice([5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 75])
    ans = price * (100 - d) / 100
    return _Draft(
        f"A {good} costs {_money(price)}. This week it is {d}% off. What is the sale price in dollars?",
        ans,
        f"{_n(price)} * (100 - {d}) / 100",
    )


def _l3_average(r: random.Random) -> _Draft | None:
    name, subject = r.choice(NAMES), r.choice(SUBJECTS)
    k = r.choice([3, 4, 5])
    xs = [r.randint(40, 100) for _ in range(k)]
    ans = Fraction(sum(xs), k)
    listed = ", ".join(map(str, xs[:-1])) + f" and {xs[-1]}"
    return _Draft(
        f"{name} scored {listed} on {k} {subject} quizzes. What is {name}'s average score?",
        ans,
        f"({' + '.join(map(str, xs))}) / {k}",
    )


def _l3_hours(r: random.Random) -> _Draft | None:
    name, subject = r.choice(NAMES), r.choice(SUBJECTS)
    m, days = r.choice([10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 75, 90]), r.randint(2, 60)
    ans = Fraction(m * days, 60)
    return _Draft(
        f"{name} studies {subject} for {m} minutes a day, {days} days in a row. "
        "How many hours is that in total?",
        ans,
        f"{m} * {days} / 60",
    )


def _l3_percent_not(r: random.Random) -> _Draft | None:
    p = r.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 55, 60, 64, 75, 80, 85, 90])
    total = r.randint(4, 120) * 25
    ans = total - Fraction(total * p, 100)
    if not _clean(ans) or ans.denominator != 1:
        return None
    who, how = r.choice(
        [
            ("students at a school", "walk to school"),
            ("members of a club", "play chess"),
            ("runners in a race", "finish under an hour"),
            ("guests at a fair", "buy a ticket"),
            ("workers at a factory", "cycle to work"),
            ("households in a town", "own a dog"),
        ]
    )
    return _Draft(
        f"There are {total} {who}, and {p}% of them {how}. How many of them do not {how}?",
        ans,
        f"{total} - {total} * {p} / 100",
    )


# ----------------------------------------------------------------------------- level 4


def _l4_proportional(r: random.Random) -> _Draft | None:
    v = r.choice(VEHICLES)
    speed = r.randint(6, 120)
    t1, t2 = r.randint(2, 8), r.randint(2, 15)
    if t1 == t2:
        return None
    d1 = speed * t1
    return _Draft(
        f"A {v} covers {d1} km in {t1} hours. At the same speed, how many km does it cover in {t2} hours?",
        Fraction(d1, t1) * t2,
        f"{d1} / {t1} * {t2}",
    )


def _l4_avg_speed(r: random.Random) -> _Draft | None:
    name = r.choice(NAMES)
    v1, v2 = r.sample([20, 30, 40, 45, 50, 60, 75, 80, 90, 100, 120], 2)
    t1, t2 = Fraction(r.randint(1, 8), 2), Fraction(r.randint(1, 8), 2)
    d1, d2 = v1 * t1, v2 * t2
    if d1.denominator != 1 or d2.denominator != 1:
        return None
    ans = (d1 + d2) / (d1 / v1 + d2 / v2)
    return _Draft(
        f"{name} drives {_n(d1)} km at {v1} km/h and then {_n(d2)} km at {v2} km/h. "
        "What is the average speed for the whole trip, in km/h?",
        ans,
        f"({_n(d1)} + {_n(d2)}) / ({_n(d1)} / {v1} + {_n(d2)} / {v2})",
    )


def _l4_ratio(r: random.Random) -> _Draft | None:
    n1, n2 = _pick2(r, NAMES)
    a, b = r.randint(1, 9), r.randint(1, 9)
    if a == b:
        return None
    total = (a + b) * r.randint(5, 400)
    return _Draft(
        f"{n1} and {n2} share ${total} in the ratio {a}:{b}. How many dollars does {n2} get?",
        Fraction(total * b, a + b),
        f"{total} * {b} / ({a} + {b})",
    )


def _l4_pumps(r: random.Random) -> _Draft | None:
    a, b = r.randint(2, 30), r.randint(2, 30)
    ans = Fraction(a * b, a + b)
    if not _clean(ans):
        return None
    what = r.choice(
        [
            ("pump", "fills a pool"),
            ("hose", "fills a tank"),
            ("printer", "prints a batch of flyers"),
            ("machine", "packs an order"),
            ("painter", "paints a fence"),
        ]
    )
    return _Draft(
        f"One {what[0]} {what[1]} in {a} hours; a second {what[0]} does the same job in {b} hours. "
        "Working together, how many hours do they take?",
        ans,
        f"{a} * {b} / ({a} + {b})",
    )


def _l4_successive(r: random.Random) -> _Draft | None:
    good = r.choice(GOODS)
    p = Fraction(r.randint(4, 100) * 5)
    up = r.choice([5, 10, 15, 20, 25, 30, 40, 50])
    down = r.choice([5, 10, 15, 20, 25, 30, 40, 50])
    ans = p * (100 + up) / 100 * (100 - down) / 100
    return _Draft(
        f"The price of a {good} is {_money(p)}. It goes up by {up}%, and later the new price goes down by "
        f"{down}%. What is the final price in dollars?",
        ans,
        f"{_n(p)} * (100 + {up}) / 100 * (100 - {down}) / 100",
    )


def _l4_unit_price(r: random.Random) -> _Draft | None:
    (_, items) = r.choice(ITEMS)
    k = r.randint(2, 24)
    per = Fraction(r.randint(5, 400), 20)  # 5-cent steps
    m = r.randint(2, 60)
    if m == k:
        return None
    cost = per * k
    ans = per * m
    if not _clean(cost) or not _clean(ans):
        return None
    return _Draft(
        f"A pack of {k} {items} costs {_money(cost)}. At the same price per item, how many dollars do "
        f"{m} {items} cost?",
        ans,
        f"{_n(cost)} / {k} * {m}",
    )


# ----------------------------------------------------------------------------- level 5


def _l5_discount_tax(r: random.Random) -> _Draft | None:
    name = r.choice(NAMES)
    g1, g2 = r.sample(GOODS, 2)
    k1, k2 = r.randint(1, 6), r.randint(1, 6)
    p1, p2 = Fraction(r.randint(4, 200), 4), Fraction(r.randint(4, 200), 4)
    d = r.choice([5, 10, 15, 20, 25, 30])
    tax = r.choice([2, 4, 5, 6, 8, 10])
    ans = (k1 * p1 + k2 * p2) * (100 - d) / 100 * (100 + tax) / 100
    return _Draft(
        f"{name} buys {k1} {g1}{'s' if k1 > 1 else ''} at {_money(p1)} each and {k2} {g2}"
        f"{'s' if k2 > 1 else ''} at {_money(p2)} each. The shop takes {d}% off the total, then adds "
        f"{tax}% sales tax to the discounted amount. How many dollars does {name} pay?",
        ans,
        f"({k1} * {_n(p1)} + {k2} * {_n(p2)}) * (100 - {d}) / 100 * (100 + {tax}) / 100",
    )


def _l5_tank(r: random.Random) -> _Draft | None:
    cap = r.randint(4, 200) * 10
    den = r.choice([2, 3, 4, 5, 8, 10])
    num = r.randint(0, den - 1)
    rin, rout = r.randint(3, 60), r.randint(1, 30)
    if rin <= rout or (cap * num) % den:
        return None
    ans = (cap - Fraction(cap * num, den)) / (rin - rout)
    full = "empty" if num == 0 else f"{num}/{den} full"
    left = f"{cap}" if num == 0 else f"({cap} - {cap} * {num} / {den})"
    return _Draft(
        f"A tank holds {cap} litres and is {full}. Water flows in at {rin} litres per minute while a leak "
        f"drains {rout} litres per minute. How many minutes until the tank is full?",
        ans,
        f"{left} / ({rin} - {rout})",
    )


def _l5_recipe(r: random.Random) -> _Draft | None:
    name = r.choice(NAMES)
    s1, s2 = r.choice([2, 4, 6, 8, 10, 12]), r.randint(3, 40)
    if s1 == s2:
        return None
    q = r.randint(5, 120) * 10
    need = Fraction(q * s2, s1)
    have = r.randint(0, int(need)) // 10 * 10
    ans = need - have
    if not _clean(ans) or ans == 0:
        return None
    dish, stuff = r.choice(
        [
            ("pancakes", "flour"),
            ("a curry", "rice"),
            ("bread", "flour"),
            ("a stew", "lentils"),
            ("a fruit salad", "berries"),
            ("cookies", "sugar"),
            ("a soup", "pasta"),
        ]
    )
    return _Draft(
        f"A recipe for {dish} that serves {s1} uses {q} grams of {stuff}. {name} wants to cook for {s2} "
        f"people and has {have} grams of {stuff}. How many more grams of {stuff} does {name} need?",
        ans,
        f"{q} * {s2} / {s1} - {have}",
    )


def _l5_interest(r: random.Random) -> _Draft | None:
    name = r.choice(NAMES)
    principal = r.randint(4, 400) * 50
    rate = Fraction(r.choice([2, 3, 4, 5, 6, 8, 9, 10, 12])) / r.choice([1, 1, 2])
    months = r.choice([3, 4, 6, 8, 9, 10, 15, 18, 24, 30])
    ans = principal * rate / 100 * months / 12
    return _Draft(
        f"{name} puts ${principal} in an account that pays {_n(rate)}% simple interest per year. "
        f"How many dollars of interest does it earn in {months} months?",
        ans,
        f"{principal} * {_n(rate)} / 100 * {months} / 12",
    )


def _l5_trip(r: random.Random) -> _Draft | None:
    name = r.choice(NAMES)
    v = r.randint(8, 30)
    mins = r.choice([12, 15, 20, 24, 30, 36, 40, 45, 48, 50, 75, 90])
    walk = r.randint(2, 60) * 50
    ans = Fraction(v * mins, 60) + Fraction(walk, 1000)
    return _Draft(
        f"{name} cycles at {v} km/h for {mins} minutes and then walks {walk} metres. "
        f"How many kilometres does {name} travel in total?",
        ans,
        f"{v} * {mins} / 60 + {walk} / 1000",
    )


def _l5_budget(r: random.Random) -> _Draft | None:
    name = r.choice(NAMES)
    income = r.randint(12, 120) * 100
    a, b = r.choice([(1, 3), (1, 4), (2, 5), (1, 5), (3, 10), (1, 6), (2, 7)])
    c = r.choice([10, 15, 20, 25, 30, 40, 50])
    ans = (income - Fraction(income * a, b)) * (100 - c) / 100
    return _Draft(
        f"{name} earns ${income} a month, spends {a}/{b} of it on rent, and then {c}% of what remains on "
        f"food. How many dollars are left after rent and food?",
        ans,
        f"({income} - {income} * {a} / {b}) * (100 - {c}) / 100",
    )


TEMPLATES: dict[int, list[tuple[str, Template]]] = {
    1: [
        ("L1.add", _l1_add),
        ("L1.sub", _l1_sub),
        ("L1.mul", _l1_mul),
        ("L1.div", _l1_div),
        ("L1.rate", _l1_rate),
    ],
    2: [
        ("L2.change", _l2_change),
        ("L2.giveaway", _l2_giveaway),
        ("L2.wages", _l2_wages),
        ("L2.seats", _l2_seats),
        ("L2.pack", _l2_pack),
    ],
    3: [
        ("L3.fraction", _l3_fraction),
        ("L3.discount", _l3_discount),
        ("L3.average", _l3_average),
        ("L3.hours", _l3_hours),
        ("L3.percent_not", _l3_percent_not),
    ],
    4: [
        ("L4.proportional", _l4_proportional),
        ("L4.avg_speed", _l4_avg_speed),
        ("L4.ratio", _l4_ratio),
        ("L4.pumps", _l4_pumps),
        ("L4.successive", _l4_successive),
        ("L4.unit_price", _l4_unit_price),
    ],
    5: [
        ("L5.discount_tax", _l5_discount_tax),
        ("L5.tank", _l5_tank),
        ("L5.recipe", _l5_recipe),
        ("L5.interest", _l5_interest),
        ("L5.trip", _l5_trip),
        ("L5.budget", _l5_budget),
    ],
}
