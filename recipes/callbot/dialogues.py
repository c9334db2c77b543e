#!/usr/bin/env python3
"""Write call-centre dialogues (JSONL, one call per line) for recipes/callbot: CC0, written for
echostream.

Each call follows one of the intents below: a greeting, the customer's request, the agent's
questions (name, account number, date, address ...), the answers, a confirmation and a goodbye.
Every turn is drawn from phrasings written here, filled with names, numbers, dates, amounts,
products and places spelled as they are spoken (no digits).

Held-out calls use phrasings and fill-ins that training calls never use: every third phrasing of
each list, and a reserved share of the names, places and products, belong to the held-out split
only, so held-out sentences are new text and not new arrangements of seen sentences.

    python3 recipes/callbot/dialogues.py --split train --calls 600 --seed 1 > train.jsonl
    python3 recipes/callbot/dialogues.py --split heldout --calls 80 --seed 2 > heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "synth_en" / "sentences"))
from generate import DAYS, MONTHS, ORDINALS, number_words

FIRST = ["Anna", "Ben", "Carla", "David", "Emma", "Frank", "Grace", "Henry", "Isla", "Jack", "Kate", "Liam", "Maria", "Noah", "Olivia", "Peter", "Rosa", "Sam", "Tara", "Victor", "Wendy", "Adam", "Beth", "Chris", "Diana", "Ethan", "Fiona", "George", "Hannah", "Ian", "Julia", "Kevin", "Laura", "Martin", "Nora", "Oscar", "Paula", "Robert", "Sara", "Tom"]  # fmt: skip
LAST = ["Smith", "Brown", "Taylor", "Wilson", "Clark", "Walker", "Wright", "Green", "Hall", "Lewis", "Young", "King", "Scott", "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans", "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard"]  # fmt: skip
CITIES = ["Boston", "Denver", "Chicago", "Seattle", "Portland", "Austin", "Dallas", "Phoenix", "Atlanta", "Miami", "Houston", "Detroit", "Orlando", "Nashville", "Memphis", "Raleigh", "Tucson", "Omaha", "Richmond", "Madison", "Oakland", "Buffalo"]  # fmt: skip
STREETS = ["Oak", "Maple", "Pine", "Cedar", "Elm", "Hill", "Lake", "River", "Park", "Main", "Church", "Mill", "Spring", "Forest", "Sunset", "Meadow", "Highland", "Willow"]  # fmt: skip
STREET_KINDS = ["street", "avenue", "road", "lane", "drive", "way"]
PRODUCTS = ("internet plan", "mobile plan", "phone line", "television package", "home insurance",
            "car insurance", "credit card", "savings account", "electricity contract", "water bill",
            "gym membership", "streaming subscription", "broadband service", "travel insurance",
            "gas contract", "loyalty card")  # fmt: skip
COMPANY = ("Northwind", "Bluebay", "Summit", "Greenline", "Harbor", "Clearwave")


def held_out(options: list[str] | tuple[str, ...], split: str) -> list[str]:
    """Every third option is reserved for the held-out split."""
    return [o for i, o in enumerate(options) if (i % 3 == 2) == (split == "heldout")]


class Fill:
    """Draws the fill-ins of one call from ``split``'s share of every list."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng, self.split = rng, split
        self.name = f"{rng.choice(held_out(FIRST, split))} {rng.choice(held_out(LAST, split))}"
        self.city = rng.choice(held_out(CITIES, split))
        self.product = rng.choice(held_out(PRODUCTS, split))
        self.company = rng.choice(COMPANY)
        self.agent = rng.choice(held_out(FIRST, split))

    def digits(self, n: int) -> str:
        return " ".join(number_words(self.rng.randrange(10)) for _ in range(n))

    def date(self) -> str:
        return f"{self.rng.choice(MONTHS)} the {ORDINALS[self.rng.randint(1, 20)]}"

    def day(self) -> str:
        return self.rng.choice(DAYS)

    def time(self) -> str:
        hour = self.rng.randint(1, 12)
        minute = self.rng.choice(["", " fifteen", " thirty", " forty five"])
        return f"{number_words(hour)}{minute} {self.rng.choice(['in the morning', 'in the afternoon', 'p m', 'a m'])}"

    def amount(self) -> str:
        dollars = self.rng.randint(5, 480)
        cents = self.rng.choice([0, 0, 50, 99, 25])
        return f"{number_words(dollars)} dollars" + (f" and {number_words(cents)} cents" if cents else "")

    def address(self) -> str:
        street = f"{self.rng.choice(held_out(STREETS, self.split))} {self.rng.choice(STREET_KINDS)}"
        return f"{number_words(self.rng.randint(1, 99))} {street}, {self.city}"


# Each intent: the customer's opening requests, then (agent question, customer answer) steps, then
# the agent's resolution. Phrasings are lists; {placeholders} are Fill's attributes or calls.
GREETINGS = [
    "Thank you for calling {company}, my name is {agent}, how can I help you today?",
    "Good morning, you are speaking with {agent} at {company}, what can I do for you?",
    "Hello and welcome to {company} customer service, how may I help?",
    "Hi, this is {agent} from {company}, how can I help you?",
    "Good afternoon, {company} support, {agent} speaking.",
    "Thanks for holding, this is {agent}, what can I help you with today?",
]
ASK_NAME = [
    ("Can I have your full name please?", "Yes, it's {name}."),
    ("Could you tell me your name, please?", "My name is {name}."),
    ("Who am I speaking with today?", "This is {name}."),
    ("May I take your name?", "Sure, {name}."),
    ("And your name, please?", "It's {name}."),
    ("What name is the account under?", "It should be under {name}."),
]
ASK_ACCOUNT = [
    ("What is your account number?", "It's {digits6}."),
    ("Could you read me the account number, please?", "Sure, {digits6}."),
    ("Do you have your customer number handy?", "Yes, it is {digits6}."),
    ("Can you confirm the last four digits of the account?", "The last four are {digits4}."),
    ("I just need your reference number.", "The reference is {digits6}."),
    ("What's the phone number on the account?", "It's {digits3} {digits3} {digits4}."),
]
CLOSINGS = [
    ("Is there anything else I can help you with?", "No, that's all, thank you."),
    ("Can I help you with anything else today?", "No thanks, that was everything."),
    ("Is there anything more I can do for you?", "That's it, thanks for your help."),
    ("Anything else before you go?", "No, you've been very helpful."),
    ("Do you need help with anything else?", "Not today, thank you very much."),
    ("Was there anything else?", "No, that's all I needed."),
]
GOODBYES = [
    "Thank you for calling, have a great day.",
    "You're welcome, goodbye.",
    "Thanks for calling {company}, take care.",
    "My pleasure, have a nice evening.",
    "Thank you, enjoy the rest of your day.",
    "Glad I could help, goodbye now.",
]
INTENTS: dict[str, dict[str, list]] = {
    "billing": {
        "open": [
            "Hi, I have a question about my last bill.",
            "I think I was charged twice this month.",
            "My bill is higher than usual and I don't know why.",
            "Hello, I'd like to understand a charge on my statement.",
            "I was billed {amount} and I expected much less.",
            "There's a payment on my account I don't recognise.",
        ],
        "steps": [
            ("Which charge are you asking about?", "The one for {amount} on {date}."),
            ("When did you notice the charge?", "I saw it on {day} morning."),
            ("Is this for your {product}?", "Yes, the {product}."),
            ("How did you pay the last bill?", "By card, on {date}."),
            ("Do you still have the statement in front of you?", "Yes, it says {amount}."),
            ("Did you change your plan recently?", "No, I haven't changed anything."),
        ],
        "resolve": [
            "I can see the extra charge, I'll refund {amount} to your card.",
            "That was a billing error, you'll get a credit on your next statement.",
            "I've removed the late fee, your new balance is {amount}.",
            "The charge is for the annual renewal, but I can split it into monthly payments.",
            "I have raised a refund request, it takes three to five working days.",
            "You were charged for two months at once, so next month you'll pay nothing.",
        ],
    },
    "booking": {
        "open": [
            "I'd like to change my appointment.",
            "Can I book a technician visit for next week?",
            "Hi, I need to reschedule my booking.",
            "I want to cancel the appointment I made.",
            "Is it possible to move my visit to another day?",
            "I'd like to make a reservation for {day}.",
        ],
        "steps": [
            ("Which day would suit you?", "Could we do {day}?"),
            ("What time works best for you?", "Around {time} would be great."),
            ("Is the address still {address}?", "Yes, that's right."),
            ("Do you prefer morning or afternoon?", "The afternoon is better for me."),
            ("When was the original booking?", "It was for {date}."),
            ("How many people is the booking for?", "For {small} people."),
        ],
        "resolve": [
            "I've moved your appointment to {day} at {time}.",
            "You're booked in for {date}, you'll get a text message to confirm.",
            "The visit is cancelled and there is no charge.",
            "The engineer will arrive between {time} and noon on {day}.",
            "I've reserved the slot for you on {date} at {time}.",
            "Your new booking reference is {digits6}.",
        ],
    },
    "outage": {
        "open": [
            "My internet has been down since this morning.",
            "The line keeps dropping every few minutes.",
            "I have no signal at home at all.",
            "Hi, my television package stopped working yesterday.",
            "The connection is really slow in the evenings.",
            "I can't make any calls from my phone line.",
        ],
        "steps": [
            ("Have you tried restarting the router?", "Yes, twice, it didn't help."),
            ("Are the lights on the box green or red?", "The second light is flashing red."),
            ("Is anyone else in the house affected?", "Yes, nobody can get online."),
            ("Since when exactly has it been down?", "Since about {time}."),
            ("Which city are you in?", "I'm in {city}."),
            ("Can you check if the cable is plugged in?", "It's plugged in, I checked."),
        ],
        "resolve": [
            "There is a fault in your area, it should be fixed by {time}.",
            "I've reset the line from here, please try again in five minutes.",
            "I'm sending a new router, it will arrive on {day}.",
            "I've booked an engineer for {date} to look at the line.",
            "We're aware of an outage in {city}, engineers are working on it.",
            "I'll give you a credit of {amount} for the time without service.",
        ],
    },
    "account": {
        "open": [
            "I forgot my password and I'm locked out.",
            "I need to update my address.",
            "I'd like to change the email on my account.",
            "Can you tell me my current balance?",
            "I want to add my partner to the account.",
            "I'd like to close my account please.",
        ],
        "steps": [
            ("What is the new address?", "It's {address}."),
            ("Can you confirm your date of birth?", "It's {date}, nineteen {decade}."),
            ("What email should we use?", "{first} dot {last} at example dot com."),
            ("Did you get the security code by text?", "Yes, the code is {digits4}."),
            ("Why would you like to close the account?", "I'm moving to {city}."),
            ("Is the phone number still the same?", "Yes, it hasn't changed."),
        ],
        "resolve": [
            "Your address is updated, the next letter will go to the new one.",
            "I've sent a reset link to your email, it's valid for one hour.",
            "Your current balance is {amount}.",
            "I've added them as a second holder, they'll get a welcome letter.",
            "The account will close at the end of the month.",
            "Everything is updated, you'll get a confirmation email shortly.",
        ],
    },
    "delivery": {
        "open": [
            "My order hasn't arrived yet.",
            "I'd like to track a parcel please.",
            "The package I received is damaged.",
            "I was sent the wrong item.",
            "Can I change the delivery address for my order?",
            "When will my delivery arrive?",
        ],
        "steps": [
            ("What is the order number?", "It's {digits6}."),
            ("When did you place the order?", "On {date}."),
            ("Where should we deliver it?", "To {address}."),
            ("What was in the parcel?", "A new phone and a charger."),
            ("Would you like a replacement or a refund?", "A replacement, please."),
            ("Can someone be home on {day}?", "Yes, I work from home that day."),
        ],
        "resolve": [
            "The parcel is with the courier and will arrive on {day}.",
            "I've arranged a replacement, it ships today.",
            "You'll get a full refund of {amount} within five days.",
            "The address is changed, delivery is still on {date}.",
            "A courier will collect the wrong item on {day}.",
            "I've upgraded it to next day delivery at no cost.",
        ],
    },
    "plan": {
        "open": [
            "I'd like to upgrade my {product}.",
            "Are there any cheaper plans available?",
            "My contract ends next month, what are my options?",
            "I want to add more data to my mobile plan.",
            "Can I switch to paperless billing?",
            "I'm thinking of leaving, the price went up again.",
        ],
        "steps": [
            ("How much do you pay at the moment?", "About {amount} a month."),
            ("How much data do you use each month?", "Maybe {small} gigabytes."),
            ("Would a twelve month contract be all right?", "Twelve months is fine."),
            ("Do you want to keep the same number?", "Yes, please keep my number."),
            ("Shall I read you the new terms?", "Yes, go ahead."),
            ("Would you like the offer with free calls?", "That sounds good."),
        ],
        "resolve": [
            "I can offer you the same plan for {amount} a month.",
            "Your upgrade starts on {date}.",
            "You're now on paperless billing, statements come by email.",
            "I've added ten gigabytes for the rest of the month.",
            "I've applied a loyalty discount of {amount}.",
            "The new contract runs for twelve months from today.",
        ],
    },
}


def fill(template: str, f: Fill) -> str:
    first, last = f.name.split()
    values = {
        "company": f.company, "agent": f.agent, "name": f.name, "first": first, "last": last,
        "city": f.city, "product": f.product, "amount": f.amount(), "date": f.date(), "day": f.day(),
        "time": f.time(), "address": f.address(), "digits6": f.digits(6), "digits4": f.digits(4),
        "digits3": f.digits(3), "small": number_words(f.rng.randint(2, 12)),
        "decade": number_words(f.rng.randint(50, 99)),
    }  # fmt: skip
    return template.format(**values)


def call(index: int, split: str, rng: random.Random) -> dict:
    f = Fill(rng, split)
    intent = INTENTS[rng.choice(sorted(INTENTS))]
    turns = [("agent", rng.choice(held_out(GREETINGS, split))),
             ("customer", rng.choice(held_out(intent["open"], split)))]  # fmt: skip
    steps = [rng.choice(held_out(ASK_NAME, split))]
    if rng.random() < 0.7:
        steps.append(rng.choice(held_out(ASK_ACCOUNT, split)))
    steps += rng.sample(held_out(intent["steps"], split), k=min(2, len(held_out(intent["steps"], split))))
    for question, answer in steps:
        turns += [("agent", question), ("customer", answer)]
    turns.append(("agent", rng.choice(held_out(intent["resolve"], split))))
    if rng.random() < 0.6:
        turns.append(("customer", rng.choice(held_out(["Great, thank you.", "Perfect, thanks.", "Okay, that works.",
                                                      "Thanks, that's helpful.", "All right.", "Lovely, thank you."],
                                                     split))))  # fmt: skip
    closing, reply = rng.choice(held_out(CLOSINGS, split))
    turns += [("agent", closing), ("customer", reply), ("agent", rng.choice(held_out(GOODBYES, split)))]
    return {"id": f"{split}-call-{index:04d}", "turns": [{"role": r, "text": fill(t, f)} for r, t in turns]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["train", "heldout"], required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    rng = random.Random(f"{args.split}:{args.seed}")
    for i in range(args.calls):
        print(json.dumps(call(i, args.split, rng)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
