"""Write gcdbench_jsonl_dataset/data/tickets.jsonl: made-up customer-support messages.

Every text is composed here from short phrases written for this example (no real data), so
the file can ship inside the package under any licence. Deterministic: running it again
writes the same bytes, so the sha256 in the plugin stays right.

    python make_tickets.py && sha256sum gcdbench_jsonl_dataset/data/tickets.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PER_CLASS = 40
OPENERS = ["", "Hi, ", "Hello, ", "Hey there, ", "Good morning, ", "Quick question: ", "Help! "]
CLOSERS = ["", " Thanks.", " Thank you!", " Please help.", " Any ideas?", " Cheers."]

# label -> core phrases; each text is one phrase, maybe with a detail, an opener and a closer.
PHRASES = {
    "refund_request": [
        "I would like my money back for order {n}",
        "can I get a refund for the jacket I returned",
        "please refund the duplicate payment on my card",
        "I returned the shoes two weeks ago and still have no refund",
        "how long does a refund take to reach my bank",
        "I want to return this item and get a full refund",
        "the refund for order {n} never arrived",
        "you promised a refund but my balance has not changed",
    ],
    "late_delivery": [
        "my parcel is {d} days late",
        "order {n} still has not arrived",
        "the tracking page has not moved for {d} days",
        "where is my package, it was due on Monday",
        "the courier says delivered but nothing came",
        "my delivery keeps getting postponed",
        "it has been {d} days and the order is still in transit",
        "when will my order {n} finally be delivered",
    ],
    "password_reset": [
        "I forgot my password and cannot log in",
        "the password reset email never arrives",
        "the reset link says it has expired",
        "how do I change my password",
        "my account is locked after too many login attempts",
        "I cannot sign in, it says my password is wrong",
        "please send me a new password reset link",
        "the two-factor code is not accepted when I log in",
    ],
    "billing_error": [
        "I was charged twice for order {n}",
        "my invoice shows the wrong amount",
        "there is a charge of {d}0 euros I do not recognise",
        "you billed me after I cancelled",
        "the discount code was not applied to my bill",
        "my card was charged but the order failed",
        "why is my monthly bill higher than usual",
        "the tax on my invoice looks wrong",
    ],
    "cancel_subscription": [
        "I want to cancel my subscription",
        "how do I stop my monthly plan",
        "please end my membership at the end of this month",
        "I do not want the premium plan to renew",
        "turn off automatic renewal on my account",
        "cancel my plan, I no longer use the service",
        "where is the button to unsubscribe from the paid plan",
        "I signed up for a trial and want to cancel before I am charged",
    ],
    "damaged_item": [
        "the glass vase arrived broken",
        "the box was crushed and the item is damaged",
        "my new phone has a cracked screen out of the box",
        "the chair arrived with a missing leg",
        "the package was wet and the book is ruined",
        "the lamp I received does not turn on",
        "there is a big scratch on the table you delivered",
        "half of the plates were smashed in the parcel",
    ],
    "change_address": [
        "I need to change the delivery address for order {n}",
        "can I ship my order to my office instead",
        "I moved house, please update my address",
        "I typed the wrong postcode at checkout",
        "how do I edit my shipping address",
        "please send order {n} to my new flat",
        "can I change where the parcel goes before it ships",
        "my billing address is out of date",
    ],
    "app_crash": [
        "the app crashes every time I open it",
        "the app freezes on the checkout screen",
        "after the update the app will not start",
        "the Android app closes when I tap my orders",
        "I get a white screen when I launch the iPhone app",
        "the app keeps logging me out and crashing",
        "the app is stuck on the loading spinner",
        "the search in the app makes it crash",
    ],
}
DETAILS = ["", " again", " today", " since yesterday", " this week"]


def texts_for(label: str, rng: random.Random) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < PER_CLASS:
        phrase = rng.choice(PHRASES[label]).format(n=rng.randint(10000, 99999), d=rng.randint(3, 9))
        text = rng.choice(OPENERS) + phrase + rng.choice(DETAILS) + "." + rng.choice(CLOSERS)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def main() -> None:
    rng = random.Random(0)
    rows = [(text, label) for label in PHRASES for text in texts_for(label, rng)]
    rng.shuffle(rows)
    target = Path(__file__).parent / "gcdbench_jsonl_dataset" / "data" / "tickets.jsonl"
    with open(target, "w", encoding="utf-8", newline="\n") as fh:
        for text, label in rows:
            fh.write(json.dumps({"task": "support", "input": text, "label": label}) + "\n")


if __name__ == "__main__":
    main()
