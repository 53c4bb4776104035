"""Generate the support-ticket example: tasks and two recorded teachers (examples/custom_unit/README.md).

Each ticket is triaged into a category and three extracted fields. Some tickets lack the order
number (a required detail: the right answer says "not stated", a boundary the student learns) or
the amount and date (they may be missing). Two replay teachers answer every ticket: ``careful``
copies what the ticket states and leaves the rest null; ``inventive`` is as good on complete
tickets but fills every gap with a plausible made-up value.

    python examples/custom_unit/generate.py            # writes the files next to this script
    python examples/custom_unit/generate.py --out DIR --tickets 80 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import date, timedelta
from pathlib import Path

from distillery.contracts import ids

HERE = Path(__file__).resolve().parent
UNIT = "ticket_triage"
CATEGORIES = {
    "billing": ["I was charged {amount} twice on {date}{order}. Please refund the duplicate charge.",
                "The invoice{order} shows {amount} but the price on {date} was lower. Can you fix it?"],
    "shipping": ["My parcel{order} was sent on {date} and has still not arrived. Where is it?",
                 "Tracking{order} has not moved since {date}. Is it lost?"],
    "technical": ["The app crashes every time I open the receipt{order}. It started on {date}.",
                  "I get an error 500 when I try to download the invoice{order} for {amount}."],
    "account": ["Please change the e-mail address on my account. My last purchase{order} was on {date}.",
                "I cannot log in since {date}; my last payment{order} was {amount}."],
}


def ticket(rng: random.Random, index: int) -> tuple[str, dict]:
    """One ticket text and its reference fields (null where the text does not state the field)."""
    category = rng.choice(sorted(CATEGORIES))
    template = rng.choice(CATEGORIES[category])
    has_order = rng.random() > 0.3  # about a third lack the order number
    order_id = f"ORD-{rng.randint(10000, 99999)}" if has_order else None
    day = date(2026, 1, 1) + timedelta(days=rng.randint(0, 300))
    amount = round(rng.uniform(5, 400), 2)
    fields = {"category": category, "order_id": order_id,
              "amount": amount if "{amount}" in template else None,
              "date": day.isoformat() if "{date}" in template else None}
    said_date = day.strftime("%B %-d, %Y") if index % 2 else day.isoformat()
    said_amount = f"${amount:.2f}" if index % 3 else f"{amount:.2f} USD"
    text = template.format(amount=said_amount, date=said_date, order=f" for order {order_id}" if has_order else "")
    return text, fields


def careful_answer(fields: dict, index: int) -> str:
    """States what the ticket states; a gap is null (or, now and then, the words "not stated")."""
    answer = {k: (v if v is not None else ("not stated" if index % 5 == 0 else None)) for k, v in fields.items()}
    return json.dumps(answer)


def inventive_answer(fields: dict, rng: random.Random) -> str:
    """Right on what the ticket states; fills every gap with a plausible invented value."""
    invented = {"order_id": f"ORD-{rng.randint(10000, 99999)}", "amount": round(rng.uniform(5, 400), 2),
                "date": "2026-01-15"}
    return "```json\n" + json.dumps({k: (v if v is not None else invented[k]) for k, v in fields.items()}) + "\n```"


def recording_row(task_id: str, teacher: str, text: str, latency_s: float) -> dict:
    return {"task_id": task_id, "teacher_id": teacher, "text": text, "prompt_tokens": 180,
            "completion_tokens": len(text) // 4, "latency_s": latency_s, "finish_reason": "stop"}


def generate(out: Path, tickets: int, eval_share: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    tasks, careful, inventive = [], [], []
    for i in range(tickets):
        text, fields = ticket(rng, i)
        split = "eval" if i < int(tickets * eval_share) else "train"
        gap = [k for k, v in fields.items() if v is None]
        task = {"unit": UNIT, "prompt": text, "reference": {"fields": fields}, "split": split,
                "metadata": {"scenario": "missing_order" if fields["order_id"] is None else "complete",
                             "difficulty": "hard" if len(gap) > 1 else "easy" if not gap else "medium"}}
        # the id a task without one gets at submit (ids.task_id_for over unit, prompt and tools)
        task = {"task_id": ids.task_id_for(UNIT, text, []), **task}
        tasks.append(task)
        careful.append(recording_row(task["task_id"], "careful", careful_answer(fields, i), 0.8))
        inventive.append(recording_row(task["task_id"], "inventive", inventive_answer(fields, rng), 0.4))
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("tickets.jsonl", tasks), ("careful.jsonl", careful), ("inventive.jsonl", inventive)):
        (out / name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return {"tickets": len(tasks), "eval": sum(t["split"] == "eval" for t in tasks),
            "missing_order": sum(t["reference"]["fields"]["order_id"] is None for t in tasks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for tickets.jsonl and the two recordings")
    parser.add_argument("--tickets", type=int, default=60)
    parser.add_argument("--eval-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = generate(args.out, args.tickets, args.eval_share, args.seed)
    print(f"wrote {counts['tickets']} tickets ({counts['eval']} held out, {counts['missing_order']} without an "
          f"order number) and two recordings to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
