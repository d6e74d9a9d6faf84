"""Generate the demo domain (telecom incident triage) and the general corpus, deterministically.

Run:  python data/make_demo_data.py        (rewrites data/raw/*.jsonl and data/general/*.jsonl)

The files it writes are committed, so nobody needs to run this to use the template; it exists so the
demo data is explainable and can be regrown (e.g. bigger sets for benchmarks: --train-size 1000).
Everything comes from the phrase tables below and a seeded RNG: same seed, same bytes.

What the demo measures, and why the data looks like this:
- Domain task: an incident description in, "Category: <label>\nAction: <next step>" out. Each category has
  its own vocabulary (symptoms) mixed with shared noise (regions, times, impact), so a small model can
  learn it from ~50 labelled examples and generalise to unseen combinations in the held-out set.
- Unlabelled domain text (runbook lines, unlabelled incidents) pretrains the tiny base on the vocabulary.
- General corpus: memorised facts and small-sum word problems. The general eval sets (TriviaQA-like QA,
  GSM8K-like arithmetic) ask exactly these, so "general skill" for the tiny base means "still recalls
  what it was pretrained on"; fine-tuning that overwrites it shows up as forgetting.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CATEGORIES: dict[str, dict[str, list[str]]] = {
    "radio_access": {
        "symptoms": [
            "cell site {site} is off air",
            "the eNodeB at {site} raised a sector down alarm",
            "no 4G coverage around {site}",
            "antenna tilt alarm on sector 2 of {site}",
            "the gNodeB at {site} keeps rebooting",
            "VSWR alarm on the radio unit at {site}",
            "dropped calls spike on cells of {site}",
            "5G carrier at {site} shows zero traffic",
        ],
        "actions": [
            "dispatch a field engineer to the cell site",
            "reset the baseband unit remotely",
            "check the radio unit power supply",
        ],
    },
    "core_network": {
        "symptoms": [
            "subscribers cannot attach to the packet core",
            "the MME pool rejects attach requests",
            "DNS resolution fails for mobile data users",
            "the SGW shows session setup failures",
            "PDP context activation errors on the GGSN",
            "the HSS is timing out on authentication",
            "SIP registration fails on the IMS core",
            "the PCRF is not answering policy requests",
        ],
        "actions": [
            "fail over to the standby core node",
            "escalate to the core network on-call",
            "restart the affected core network function",
        ],
    },
    "transport": {
        "symptoms": [
            "a fiber cut isolated {site}",
            "the backhaul link to {site} is down",
            "the microwave link between {site} and the hub flaps",
            "optical power loss on the metro ring near {site}",
            "packet loss on the aggregation router serving {site}",
            "the leased line to {site} lost carrier",
            "high latency on the transport ring near {site}",
            "the DWDM channel toward {site} is dark",
        ],
        "actions": [
            "reroute traffic over the backup ring",
            "dispatch the fiber splicing crew",
            "open a ticket with the leased line provider",
        ],
    },
    "billing": {
        "symptoms": [
            "a customer was charged twice for the monthly plan",
            "the invoice shows roaming fees the customer never used",
            "prepaid balance was deducted without usage",
            "the customer asks for a refund of a data bundle",
            "the bill lists a premium SMS subscription",
            "late payment fee applied after a successful payment",
            "the discount from the loyalty offer is missing on the invoice",
            "the customer was billed after cancelling the contract",
        ],
        "actions": [
            "open a billing adjustment ticket",
            "verify the charging records for the period",
            "issue a credit note after checking the payment",
        ],
    },
    "provisioning": {
        "symptoms": [
            "a new SIM card was not activated",
            "the eSIM profile download fails",
            "number port from another operator is stuck",
            "the customer's new tariff is not active on the line",
            "voicemail was not provisioned for a new line",
            "a replacement SIM still shows the old IMSI",
            "the data add-on purchased today is not provisioned",
            "international roaming barring was not lifted after the order",
        ],
        "actions": [
            "re-push the subscriber profile from the provisioning system",
            "resend the activation order",
            "check the order status in the provisioning queue",
        ],
    },
    "customer_device": {
        "symptoms": [
            "the handset shows no service after a software update",
            "mobile data does not work because the APN settings are wrong",
            "VoLTE is disabled in the phone settings",
            "the phone is stuck in airplane mode",
            "the customer's router keeps dropping Wi-Fi calling",
            "the handset overheats and loses signal",
            "the new phone is locked to another network",
            "hotspot tethering is blocked on the device",
        ],
        "actions": [
            "send the APN settings to the device by SMS",
            "guide the customer through a network settings reset",
            "ask the customer to update the handset software",
        ],
    },
}

OPENINGS = [
    "Incident reported:",
    "Ticket {ticket}:",
    "Alert at {time}:",
    "Customer care escalation:",
    "NOC observation:",
    "Report from the {region} team:",
]
IMPACTS = [
    "About {n} customers are affected.",
    "Impact is limited to the {region} area.",
    "Started at {time}.",
    "Priority set to P{p}.",
    "The issue has lasted {n} minutes.",
    "Several complaints came in from {region}.",
    "",
]
REGIONS = ["north", "south", "east", "west", "central", "coastal", "airport", "downtown", "harbour", "valley"]
SITES = ["site {a}{n}", "tower {a}-{n}", "node {a}{n}"]

RUNBOOK = [
    "Radio access incidents concern cell sites, antennas, eNodeB and gNodeB units and coverage.",
    "Core network incidents concern the packet core, MME, SGW, HSS, IMS, DNS and policy functions.",
    "Transport incidents concern fiber, backhaul, microwave links, optical rings and routers.",
    "Billing incidents concern charges, invoices, refunds, prepaid balance and fees.",
    "Provisioning incidents concern SIM activation, eSIM profiles, number ports and tariff orders.",
    "Customer device incidents concern handsets, APN settings, VoLTE settings and routers.",
]

# TriviaQA-like facts the tiny base memorises in pretraining; the general QA eval asks them back.
FACTS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Kenya?", "Nairobi"),
    ("What is the capital of Peru?", "Lima"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Norway?", "Oslo"),
    ("What is the capital of Greece?", "Athens"),
    ("What is the capital of Ireland?", "Dublin"),
    ("What is the capital of Poland?", "Warsaw"),
    ("What is the capital of Portugal?", "Lisbon"),
    ("What is the capital of Austria?", "Vienna"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of India?", "Delhi"),
    ("What is the capital of Cuba?", "Havana"),
    ("What is the capital of Chile?", "Santiago"),
    ("What color is the sky on a clear day?", "blue"),
    ("What color is grass?", "green"),
    ("What color is snow?", "white"),
    ("What color is a ripe banana?", "yellow"),
    ("What color is coal?", "black"),
    ("What color is a ripe tomato?", "red"),
    ("How many legs does a spider have?", "eight"),
    ("How many legs does a dog have?", "four"),
    ("How many days are in a week?", "seven"),
    ("How many months are in a year?", "twelve"),
    ("How many hours are in a day?", "twenty-four"),
    ("How many sides does a triangle have?", "three"),
    ("Which planet is known as the red planet?", "Mars"),
    ("Which planet is the largest?", "Jupiter"),
    ("What is the largest ocean?", "Pacific"),
    ("What is the longest river in Africa?", "Nile"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("What gas do plants absorb?", "carbon dioxide"),
    ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"),
    ("Which animal is called the king of the jungle?", "lion"),
    ("What is the fastest land animal?", "cheetah"),
    ("Which bird cannot fly and lives in Antarctica?", "penguin"),
    ("What metal is liquid at room temperature?", "mercury"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("Which continent is Egypt in?", "Africa"),
    ("What is the opposite of hot?", "cold"),
]
# More facts (146 in all), so the general QA eval is large enough that one item is not the verdict
# (--fewer-facts leaves them out: the 50-fact corpus of earlier versions).
CAPITALS = [
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Iceland", "Reykjavik"),
    ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"),
    ("Switzerland", "Bern"),
    ("Hungary", "Budapest"),
    ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"),
    ("Slovenia", "Ljubljana"),
    ("Slovakia", "Bratislava"),
    ("Czechia", "Prague"),
    ("Ukraine", "Kyiv"),
    ("Belarus", "Minsk"),
    ("Lithuania", "Vilnius"),
    ("Latvia", "Riga"),
    ("Estonia", "Tallinn"),
    ("Albania", "Tirana"),
    ("Turkey", "Ankara"),
    ("Cyprus", "Nicosia"),
    ("Malta", "Valletta"),
    ("Georgia", "Tbilisi"),
    ("Armenia", "Yerevan"),
    ("Azerbaijan", "Baku"),
    ("Kazakhstan", "Astana"),
    ("Uzbekistan", "Tashkent"),
    ("Mongolia", "Ulaanbaatar"),
    ("South Korea", "Seoul"),
    ("North Korea", "Pyongyang"),
    ("Vietnam", "Hanoi"),
    ("Thailand", "Bangkok"),
    ("Cambodia", "Phnom Penh"),
    ("Laos", "Vientiane"),
    ("Malaysia", "Kuala Lumpur"),
    ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"),
    ("Bangladesh", "Dhaka"),
    ("Nepal", "Kathmandu"),
    ("Pakistan", "Islamabad"),
    ("Afghanistan", "Kabul"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Syria", "Damascus"),
    ("Lebanon", "Beirut"),
    ("Jordan", "Amman"),
    ("Saudi Arabia", "Riyadh"),
    ("Qatar", "Doha"),
    ("Oman", "Muscat"),
    ("Australia", "Canberra"),
    ("New Zealand", "Wellington"),
    ("Fiji", "Suva"),
    ("the United Kingdom", "London"),
    ("the United States", "Washington"),
    ("Mexico", "Mexico City"),
    ("Honduras", "Tegucigalpa"),
    ("Nicaragua", "Managua"),
    ("Costa Rica", "San Jose"),
    ("Jamaica", "Kingston"),
    ("Haiti", "Port-au-Prince"),
    ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"),
    ("Ecuador", "Quito"),
    ("Paraguay", "Asuncion"),
    ("Uruguay", "Montevideo"),
    ("Argentina", "Buenos Aires"),
    ("Brazil", "Brasilia"),
    ("Morocco", "Rabat"),
    ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"),
    ("Libya", "Tripoli"),
    ("Sudan", "Khartoum"),
    ("Ethiopia", "Addis Ababa"),
    ("Somalia", "Mogadishu"),
    ("Uganda", "Kampala"),
    ("Rwanda", "Kigali"),
    ("Nigeria", "Abuja"),
    ("Ghana", "Accra"),
    ("Senegal", "Dakar"),
    ("Mali", "Bamako"),
    ("Niger", "Niamey"),
    ("Cameroon", "Yaounde"),
    ("Angola", "Luanda"),
    ("Zambia", "Lusaka"),
    ("Zimbabwe", "Harare"),
    ("Mozambique", "Maputo"),
    ("Madagascar", "Antananarivo"),
    ("Namibia", "Windhoek"),
    ("Botswana", "Gaborone"),
    ("Liberia", "Monrovia"),
    ("Sierra Leone", "Freetown"),
    ("Guinea", "Conakry"),
    ("Gabon", "Libreville"),
    ("Bhutan", "Thimphu"),
]
NAMES = ["Ana", "Ben", "Carla", "Dev", "Emma", "Femi", "Gus", "Hana", "Ivan", "Jo"]
OBJECTS = ["apples", "books", "coins", "pens", "stamps", "cards", "shells", "marbles"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        site=rng.choice(SITES).format(a=rng.choice("ABCDEFGH"), n=rng.randint(10, 99)),
        ticket=f"INC{rng.randint(10000, 99999)}",
        time=f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}",
        region=rng.choice(REGIONS),
        n=rng.randint(2, 900),
        p=rng.randint(1, 4),
    )


def incident(category: str, rng: random.Random) -> tuple[str, str]:
    """One (description, answer) pair for `category`."""
    table = CATEGORIES[category]
    parts = [
        _fill(rng.choice(OPENINGS), rng),
        _fill(rng.choice(table["symptoms"]), rng) + ".",
        _fill(rng.choice(IMPACTS), rng),
    ]
    text = " ".join(p for p in parts if p)
    answer = f"Category: {category}\nAction: {rng.choice(table['actions'])}."
    return text, answer


def runbook_entries() -> list[str]:
    """Domain documentation a real base model would have read: which symptoms belong to which category
    and the actions each category allows. It teaches vocabulary and associations, not the chat task."""
    lines = []
    for cat, table in CATEGORIES.items():
        for symptom in table["symptoms"]:
            lines.append(f"Runbook: when {symptom.format(site='a site')}, the category is {cat}.")
        for action in table["actions"]:
            lines.append(
                f"Runbook: for a {cat} incident, a valid next action is to {action}.\n"
                f"Category: {cat}\nAction: {action}."
            )
    return lines


def word_problem(a: int, b: int, rng: random.Random) -> tuple[str, str]:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    return f"{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have?", str(a + b)


def build(
    seed: int,
    train_size: int,
    eval_size: int,
    unlabelled_size: int,
    more_facts: bool = True,
    max_addend: int = 9,
    general_eval_size: int = 0,
) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    facts = FACTS + [(f"What is the capital of {c}?", k) for c, k in CAPITALS] if more_facts else FACTS
    cats = sorted(CATEGORIES)
    seen: set[str] = set()

    def unique_incidents(count: int) -> list[tuple[str, str, str]]:
        out = []
        while len(out) < count:
            cat = cats[len(out) % len(cats)]  # balanced classes
            text, answer = incident(cat, rng)
            key = " ".join(text.lower().split())
            if key not in seen:  # no duplicates and no train/eval leakage by construction
                seen.add(key)
                out.append((cat, text, answer))
        return out

    train = unique_incidents(train_size)
    evals = unique_incidents(eval_size)
    unlabelled = unique_incidents(unlabelled_size)
    rng.shuffle(train)
    rng.shuffle(evals)

    train_records = []
    for i, (_, text, answer) in enumerate(train):
        if i % 5 == 4:  # both accepted record shapes appear in the shipped data
            train_records.append(
                {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]}
            )
        else:
            train_records.append({"input": text, "output": answer})

    problems = [(a, b, *word_problem(a, b, rng)) for a in range(1, max_addend + 1) for b in range(1, max_addend + 1)]
    general_text = [{"text": f"Question: {q}\nAnswer: {a}"} for q, a in facts]
    general_text += [{"text": f"Question: {q}\nAnswer: {ans}"} for _, _, q, ans in problems]
    domain_text = [{"text": line} for line in RUNBOOK + runbook_entries()] + [{"text": t} for _, t, _ in unlabelled]

    # 0 = ask every memorised fact and sum (146 and 81 items): at 40 items one item moved a task by 2.5% and
    # decided the gate; here it is worth 0.7% and 1.2%. Sums beyond 9 + 9 (--max-addend) were tried: the
    # 0.2M-parameter base recalls only ~70% of them, and what it barely memorised is what tuning erases.
    qa_eval = rng.sample(facts, general_eval_size or len(facts))
    arith_eval = rng.sample(problems, general_eval_size or len(problems))
    return {
        "raw/train.jsonl": train_records,
        "raw/eval.jsonl": [{"input": t, "output": a} for _, t, a in evals],
        "raw/domain_text.jsonl": domain_text,
        "raw/general_text.jsonl": general_text,
        "general/qa.jsonl": [{"question": q, "answer": a} for q, a in qa_eval],
        "general/arith.jsonl": [{"question": q, "answer": ans} for _, _, q, ans in arith_eval],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--train-size", type=int, default=60)
    parser.add_argument("--eval-size", type=int, default=60)
    parser.add_argument("--unlabelled-size", type=int, default=300)
    parser.add_argument("--fewer-facts", action="store_true", help="leave the 96 extra capitals out")
    parser.add_argument("--max-addend", type=int, default=9, help="word problems a + b for a, b in 1..N")
    parser.add_argument("--general-eval-size", type=int, default=0, help="items per general eval; 0 = all")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for rel, records in build(
        args.seed,
        args.train_size,
        args.eval_size,
        args.unlabelled_size,
        not args.fewer_facts,
        args.max_addend,
        args.general_eval_size,
    ).items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"{path}: {len(records)} records")


if __name__ == "__main__":
    main()
