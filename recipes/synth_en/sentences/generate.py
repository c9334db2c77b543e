#!/usr/bin/env python3
"""Write train.txt and heldout.txt: English sentences written for echostream (CC0).

Every template and word list below was written for echostream. Sentences are spelled the way they
are spoken (numbers, times and amounts in words, no digits or symbols), so that the text a TTS
engine reads and the transcript a model learns are the same words.

    python3 recipes/synth_en/sentences/generate.py            # rewrites both files
    python3 recipes/synth_en/sentences/generate.py --check    # exit 1 if they are out of date

The split is by sentence: no held-out sentence occurs in train.txt, compared after lower-casing
and dropping punctuation.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 20240601
TOTAL = 3300
HELDOUT = 300
HERE = Path(__file__).resolve().parent


def words(text: str) -> list[str]:
    return text.split()


# --------------------------------------------------------------------------------------------
# Numbers, times and dates in words
# --------------------------------------------------------------------------------------------

ONES = words("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen")  # fmt: skip
TENS = words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")
ORDINALS = words("_ first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
            "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
            "twentieth")  # fmt: skip
DIGITS = ONES[:10]
MONTHS = words("January February March April May June July August September October November "
          "December")  # fmt: skip
DAYS = words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in words, British style ("one hundred and five")."""
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (f" {ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    head = f"{number_words(thousands)} thousand"
    if not rest:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


def ordinal_words(n: int) -> str:
    """1 <= n <= 31 as an ordinal ("twenty third")."""
    if n <= 20:
        return ORDINALS[n]
    tens, ones = divmod(n, 10)
    return f"{TENS[tens][:-1]}ieth" if not ones else f"{TENS[tens]} {ORDINALS[ones]}"


def digit_string(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(DIGITS) for _ in range(length))


def clock_time(rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    style = rng.randrange(6)
    if style == 0:
        return f"{ONES[hour]} o'clock"
    if style == 1:
        return f"half past {ONES[hour]}"
    if style == 2:
        return f"quarter past {ONES[hour]}"
    if style == 3:
        return f"quarter to {ONES[hour]}"
    minute = rng.choice([5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55])
    if style == 4:
        return f"{ONES[hour]} {number_words(minute)}"
    return f"{number_words(minute if minute <= 30 else 60 - minute)} {'past' if minute <= 30 else 'to'} {ONES[hour]}"


def part_of_day(rng: random.Random) -> str:
    return rng.choice(["in the morning", "in the afternoon", "in the evening", "tonight", ""])


def date(rng: random.Random) -> str:
    day = ordinal_words(rng.randint(1, 28))
    month = rng.choice(MONTHS)
    return rng.choice(
        [f"the {day} of {month}", f"{month} the {day}", f"{rng.choice(DAYS)} the {day}"]
    )


def money(rng: random.Random) -> str:
    whole = rng.choice([rng.randint(1, 20), rng.randint(20, 200), rng.randint(200, 5000)])
    unit = rng.choice(["dollars", "pounds", "euros"])
    if whole == 1:
        unit = unit[:-1]
    if rng.random() < 0.3:
        cents = rng.randint(1, 99)
        small = {"dollars": "cents", "pounds": "pence", "euros": "cents"}.get(unit, "cents")
        return f"{number_words(whole)} {unit} and {number_words(cents)} {small}"
    return f"{number_words(whole)} {unit}"


def count(rng: random.Random, low: int = 2, high: int = 60) -> str:
    return number_words(rng.randint(low, high))


# --------------------------------------------------------------------------------------------
# Word lists
# --------------------------------------------------------------------------------------------

NAMES = words("Anna Ben Carla David Emma Frank Grace Henry Isla Jack Kate Liam Maria Noah Olivia Peter "
         "Rosa Sam Tom Vera Will Zoe Hannah Oscar Lucy Martin Nina Paul Ruth Simon")  # fmt: skip
PLACES = ["the station", "the library", "the post office", "the bank", "the market", "the park",
          "the airport", "the office", "the hospital", "the school", "the beach", "the museum",
          "the bakery", "the pharmacy", "the gym", "the cinema", "the hotel", "the harbour",
          "the bus stop", "the supermarket"]  # fmt: skip
FOODS = ["bread", "rice", "soup", "coffee", "tea", "apples", "oranges", "cheese", "fresh fish",
         "pasta", "salad", "chicken", "eggs", "milk", "tomatoes", "potatoes", "noodles",
         "strawberries", "yoghurt", "orange juice", "a sandwich", "pancakes", "carrots", "beans"]  # fmt: skip
THINGS = ["umbrella", "phone", "laptop", "bicycle", "jacket", "wallet", "passport", "ticket",
          "key", "backpack", "watch", "charger", "notebook", "camera", "lamp", "kettle", "sofa",
          "printer", "blanket", "suitcase", "helmet", "mirror"]  # fmt: skip
COLOURS = words("red blue green yellow black white grey brown orange purple pink silver")
ADJECTIVES = ["quiet", "busy", "small", "large", "old", "new", "bright", "cold", "warm", "clean",
              "crowded", "friendly", "noisy", "lovely", "narrow", "comfortable"]  # fmt: skip
PEOPLE = ["my sister", "my brother", "my neighbour", "our teacher", "the driver", "my friend",
          "the manager", "my mother", "my father", "the doctor", "my cousin", "the new student",
          "my grandmother", "the engineer", "our guest"]  # fmt: skip
ACTIVITIES = ["go for a walk", "read a book", "cook dinner", "watch a film", "clean the kitchen",
              "visit my parents", "play football", "go swimming", "paint the fence",
              "write some letters", "bake a cake", "fix the bike", "learn to dance",
              "plant some flowers", "call an old friend", "take the train to the coast"]  # fmt: skip
WEATHER = ["sunny", "rainy", "windy", "cloudy", "foggy", "cold", "warm", "hot", "stormy", "snowy"]
SERVICES = ["billing", "technical support", "customer service", "the sales team",
            "the complaints department", "a manager", "someone in accounts", "the returns team"]  # fmt: skip
ACCOUNT_THINGS = ["balance", "last payment", "account details", "order status", "contract",
                  "phone bill", "delivery date", "refund", "booking", "direct debit",
                  "password", "billing address"]  # fmt: skip
PROBLEMS = ["my internet is not working", "my card was declined", "the parcel never arrived",
            "the app keeps crashing", "I was charged twice", "the screen is broken",
            "I cannot log in", "the heating has stopped", "my order is late",
            "the wrong item was delivered", "the line keeps dropping", "my bill looks too high",
            "the machine makes a strange noise", "I forgot my password"]  # fmt: skip
VERBS_PAST = ["bought", "found", "lost", "painted", "fixed", "borrowed", "sold", "cleaned",
              "ordered", "returned", "carried", "wrapped"]  # fmt: skip
WEEK_TIMES = ["today", "tomorrow", "this morning", "this afternoon", "next week", "on Monday",
              "on Friday", "at the weekend", "later today", "next month", "yesterday"]  # fmt: skip


def pick(rng: random.Random, items: list[str] | tuple[str, ...]) -> str:
    return rng.choice(items)


def cap(sentence: str) -> str:
    sentence = " ".join(sentence.split())
    return sentence[0].upper() + sentence[1:]


def press_sentence(rng: random.Random) -> str:
    first, second = rng.sample(DIGITS, 2)
    return f"Press {first} for {pick(rng, SERVICES)} or {second} to hear the options again."


def sum_sentence(rng: random.Random) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return f"{number_words(a)} plus {number_words(b)} makes {number_words(a + b)}."


# --------------------------------------------------------------------------------------------
# Templates: each returns one sentence
# --------------------------------------------------------------------------------------------

Template = Callable[[random.Random], str]

TEMPLATES: list[Template] = [
    # everyday life
    lambda r: f"It is {pick(r, WEATHER)} {pick(r, WEEK_TIMES)}, so take your {pick(r, THINGS)}.",
    lambda r: f"The weather will be {pick(r, WEATHER)} {pick(r, WEEK_TIMES)}.",
    lambda r: (
        f"{pick(r, NAMES)} {pick(r, VERBS_PAST)} a {pick(r, COLOURS)} {pick(r, THINGS)} {pick(r, WEEK_TIMES)}."
    ),
    lambda r: f"Have you seen my {pick(r, COLOURS)} {pick(r, THINGS)}?",
    lambda r: f"I left my {pick(r, THINGS)} at {pick(r, PLACES)}.",
    lambda r: f"Can you meet me at {pick(r, PLACES)} at {clock_time(r)}?",
    lambda r: (
        f"{pick(r, PEOPLE).capitalize()} wants to {pick(r, ACTIVITIES)} {pick(r, WEEK_TIMES)}."
    ),
    lambda r: f"We should {pick(r, ACTIVITIES)} when it is not so {pick(r, WEATHER)}.",
    lambda r: (
        f"{pick(r, PLACES).capitalize()} is very {pick(r, ADJECTIVES)} {pick(r, WEEK_TIMES)}."
    ),
    lambda r: (
        f"I would like some {pick(r, FOODS)} and a cup of {pick(r, ['tea', 'coffee', 'hot chocolate'])}, please."
    ),
    lambda r: f"For breakfast {pick(r, NAMES)} had {pick(r, FOODS)} with {pick(r, FOODS)}.",
    lambda r: f"Do we need more {pick(r, FOODS)} from the shop?",
    lambda r: (
        f"Please buy {count(r, 2, 12)} {pick(r, ['bags of', 'boxes of', 'packets of', 'bottles of'])} {pick(r, FOODS)}."
    ),
    lambda r: f"{pick(r, NAMES)} lives {count(r, 2, 30)} minutes from {pick(r, PLACES)}.",
    lambda r: f"The walk to {pick(r, PLACES)} takes about {count(r, 5, 45)} minutes.",
    lambda r: (
        f"My {pick(r, ['flat', 'house', 'room', 'office', 'garden'])} is next to {pick(r, PLACES)}."
    ),
    lambda r: f"Is {pick(r, PLACES)} open on {pick(r, DAYS)}?",
    lambda r: "{} and {} will {} on {}.".format(
        *r.sample(NAMES, 2), pick(r, ACTIVITIES), pick(r, DAYS)
    ),
    lambda r: f"Why is {pick(r, PLACES)} so {pick(r, ADJECTIVES)} today?",
    lambda r: f"Turn left after {pick(r, PLACES)} and walk for {count(r, 2, 10)} minutes.",
    lambda r: f"Don't forget your {pick(r, THINGS)} when you go to {pick(r, PLACES)}.",
    lambda r: f"My {pick(r, THINGS)} is {pick(r, COLOURS)} and quite {pick(r, ADJECTIVES)}.",
    lambda r: f"I think {pick(r, PEOPLE)} is at {pick(r, PLACES)} right now.",
    lambda r: f"Could you help me carry this {pick(r, THINGS)} upstairs?",
    # numbers, times and dates
    lambda r: f"The train leaves at {clock_time(r)} {part_of_day(r)}.",
    lambda r: f"My appointment is at {clock_time(r)} on {date(r)}.",
    lambda r: f"The meeting moved to {pick(r, DAYS)} at {clock_time(r)}.",
    lambda r: f"The shop opens at {clock_time(r)} and closes at {clock_time(r)}.",
    lambda r: f"We arrived at {clock_time(r)} {part_of_day(r)}.",
    lambda r: f"Her birthday is on {date(r)}.",
    lambda r: f"The tickets cost {money(r)} each.",
    lambda r: f"That comes to {money(r)} altogether.",
    lambda r: f"I paid {money(r)} for the {pick(r, THINGS)}.",
    lambda r: f"There are {count(r)} people waiting at {pick(r, PLACES)}.",
    lambda r: f"The room number is {number_words(r.randint(100, 999))}.",
    lambda r: f"The bus number {number_words(r.randint(1, 99))} stops outside {pick(r, PLACES)}.",
    lambda r: f"It is about {number_words(r.randint(2, 900))} kilometres from here.",
    lambda r: f"The year was {number_words(r.randint(1990, 2030))}.",
    lambda r: sum_sentence(r),
    lambda r: (
        f"My phone number is {digit_string(r, 3)}, {digit_string(r, 3)}, {digit_string(r, 4)}."
    ),
    lambda r: f"The code is {digit_string(r, r.randint(4, 6))}.",
    lambda r: f"Please call back before {clock_time(r)}.",
    lambda r: f"The delivery should come between {clock_time(r)} and {clock_time(r)}.",
    # call centre
    lambda r: f"Hello, I would like to check my {pick(r, ACCOUNT_THINGS)}, please.",
    lambda r: f"Can you tell me my {pick(r, ACCOUNT_THINGS)}?",
    lambda r: f"I need to change my {pick(r, ACCOUNT_THINGS)}.",
    lambda r: f"Could you put me through to {pick(r, SERVICES)}?",
    lambda r: f"Please transfer me to {pick(r, SERVICES)}.",
    lambda r: f"I'm calling because {pick(r, PROBLEMS)}.",
    lambda r: f"Hi, {pick(r, PROBLEMS)} and I need some help.",
    lambda r: f"It started on {pick(r, DAYS)}: {pick(r, PROBLEMS)}.",
    lambda r: f"My account number is {digit_string(r, r.randint(6, 8))}.",
    lambda r: f"My reference number is {digit_string(r, r.randint(4, 8))}.",
    lambda r: f"The order number is {digit_string(r, 5)}, and my name is {pick(r, NAMES)}.",
    lambda r: f"Yes, my date of birth is {date(r)} {number_words(r.randint(1950, 2005))}.",
    lambda r: f"I would like to pay {money(r)} towards my bill.",
    lambda r: f"Can I speak to {pick(r, SERVICES)} about my {pick(r, ACCOUNT_THINGS)}?",
    lambda r: f"Please cancel my {pick(r, ACCOUNT_THINGS)} from {date(r)}.",
    lambda r: f"When will my {pick(r, ACCOUNT_THINGS)} be updated?",
    lambda r: f"Could someone call me back {pick(r, WEEK_TIMES)} at {clock_time(r)}?",
    lambda r: (
        f"{pick(r, ['Yes', 'No', 'Sorry', 'Okay', 'Right'])}, {pick(r, ['that is correct', 'that is not right', 'could you repeat that', 'thank you very much', 'I understand', 'please go ahead', 'one moment please'])}."
    ),
    lambda r: f"I have been waiting for {count(r, 5, 50)} minutes.",
    lambda r: f"The charge of {money(r)} is not mine.",
    lambda r: press_sentence(r),
    lambda r: f"I'd like to book a table for {count(r, 2, 12)} at {clock_time(r)}.",
    lambda r: f"Can I move my booking to {date(r)}?",
    lambda r: f"Is there a fee if I return the {pick(r, THINGS)} after {count(r, 7, 30)} days?",
    lambda r: f"Thank you, {pick(r, NAMES)}, that solves my problem.",
]


def generate(
    seed: int = SEED, total: int = TOTAL, heldout: int = HELDOUT
) -> tuple[list[str], list[str]]:
    """(train, heldout) sentences: ``total`` distinct ones, ``heldout`` of them set aside."""
    rng = random.Random(seed)
    seen: set[str] = set()
    sentences: list[str] = []
    attempts = 0
    while len(sentences) < total:
        attempts += 1
        if attempts > total * 50:
            raise SystemExit(f"only {len(sentences)} distinct sentences after {attempts} attempts")
        sentence = cap(rng.choice(TEMPLATES)(rng))
        key = comparison_key(sentence)
        if key not in seen:
            seen.add(key)
            sentences.append(sentence)
    rng.shuffle(sentences)
    return sorted(sentences[heldout:]), sorted(sentences[:heldout])


def comparison_key(sentence: str) -> str:
    """Lower case, letters, digits and apostrophes only: two sentences that read alike compare equal."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", sentence.lower()).split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the files instead of writing")
    args = parser.parse_args()
    train, held = generate()
    files = {HERE / "train.txt": train, HERE / "heldout.txt": held}
    for path, lines in files.items():
        text = "".join(f"{line}\n" for line in lines)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path.name} is out of date: run {Path(__file__).name}", file=sys.stderr)
                return 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {len(lines)} sentences to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
