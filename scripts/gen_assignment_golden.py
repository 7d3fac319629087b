"""Generate tests/data/assignment_golden.json: expected assignments straight from the documented formula (docs/DEVELOPING.md, "Assignment, step by step").

Deliberately independent of litmus.core: it restates the documented formula with plain mmh3 calls
and loops, so the committed vectors catch any drift in the real implementation. Run it once
and commit the output; rerunning must produce an identical file.

    python scripts/gen_assignment_golden.py [--out tests/data/assignment_golden.json]
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from pathlib import Path
from typing import Any

import mmh3

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "assignment_golden.json"

EXPERIMENTS: list[dict[str, Any]] = [
    {   # salt falls back to the id
        "id": "0b7e5a3c-9f41-4d2e-8c6a-1f3b5d7e9a21",
        "salt": None,
        "ramp": 1.0,
        "variants": [["model_a", 1 / 3], ["model_b", 1 / 3], ["model_c", 1 / 3]],
    },
    {
        "id": "5d2c8e1f-3a6b-4f9d-b2e7-0c4a6e8f1b32",
        "salt": None,
        "ramp": 0.37,
        "variants": [["control", 0.5], ["treatment", 0.5]],
    },
    {
        "id": "a3f9c1e7-2b5d-4e8a-9c0f-6d1b3e5a7c43",
        "salt": "homepage-ranker-2026",
        "ramp": 1.0,
        "variants": [["control", 0.5], ["treatment", 0.5]],
    },
    {
        "id": "e8b4d2a6-7c1f-4a3e-8d5b-9f2c6a0e4d54",
        "salt": None,
        # 0.57 * 10000 == 5699.999999999999 in binary floating point: bucket 5699 is in.
        "ramp": 0.57,
        "variants": [
            ["m1", 0.1], ["m2", 0.2], ["m3", 0.3], ["m4", 0.15], ["m5", 0.25],
        ],
    },
    {   # a sliver variant and a non-ASCII salt
        "id": "c6a0e4d8-1b3f-4c7a-a9e2-5d8f0b2c6e65",
        "salt": "модель-ß-🙂",
        # 0.07 * 10000 == 700.0000000000001: bucket 700 is in.
        "ramp": 0.07,
        # 10000 * 0.01225 == 122.5, which Python's round() takes to 122 (half to even).
        "variants": [["tiny", 0.01225], ["rest", 0.98775]],
    },
]


def spec_bucket(s: str) -> int:
    """The documented bucket: floor(murmur3_x86_32(utf8(s), seed=1) * 10000 / 2**32)."""
    h = mmh3.hash(s.encode("utf-8"), seed=1, signed=False)
    return (h * 10000) // (2**32)


def spec_assign(exp: dict[str, Any], unit: str) -> tuple[str | None, str, int, int]:
    """Steps 5 and 6 for a running experiment with no overrides or targeting."""
    salt = exp["salt"] or exp["id"]
    ramp_b = spec_bucket(salt + ":ramp:" + unit)
    b = spec_bucket(salt + ":" + unit)
    if ramp_b >= exp["ramp"] * 10000:
        return None, "ramp", ramp_b, b
    total = 0.0
    for i, (key, weight) in enumerate(exp["variants"]):
        total += weight
        boundary = 10000 if i == len(exp["variants"]) - 1 else round(10000 * total)
        if boundary > b:
            return key, "assigned", ramp_b, b
    raise AssertionError("unreachable: the last boundary is 10000")


def edge_unit_ids() -> list[str]:
    """Ids whose buckets sit on, or one below, every ramp threshold and variant boundary.

    A variant-boundary id must also pass the ramp, or its variant would never be checked.
    """
    wanted: set[tuple[int, str, int]] = set()
    for i, exp in enumerate(EXPERIMENTS):
        threshold = exp["ramp"] * 10000
        first_out = int(threshold) if threshold == int(threshold) else int(threshold) + 1
        if first_out < 10000:
            wanted |= {(i, "ramp", first_out), (i, "ramp", first_out - 1)}
        total = 0.0
        for _, weight in exp["variants"][:-1]:
            total += weight
            boundary = round(10000 * total)
            wanted |= {(i, "b", boundary), (i, "b", boundary - 1)}
    found: list[str] = []
    n = 0
    while wanted:
        unit = f"edge-{n}"
        n += 1
        hits = set()
        for i, exp in enumerate(EXPERIMENTS):
            salt = exp["salt"] or exp["id"]
            ramp_b = spec_bucket(salt + ":ramp:" + unit)
            b = spec_bucket(salt + ":" + unit)
            hits |= {w for w in wanted if w[0] == i and w[1] == "ramp" and w[2] == ramp_b}
            if ramp_b < exp["ramp"] * 10000:
                hits |= {w for w in wanted if w[0] == i and w[1] == "b" and w[2] == b}
        if hits:
            found.append(unit)
            wanted -= hits
    return found


def unit_ids() -> list[str]:
    """1000 unit ids: boundary hitters, plain, numeric, uuids, unicode and odd ones."""
    rng = random.Random(20260101)
    odd = [
        "", " ", "  leading", "trailing  ", "\t", "\n", "a\x00b", ":", "::", ":ramp:", "ramp:",
        "user:42", "0", "-1", "1e9", "null", "None", "true", "[]", "{}", '"quoted"', "\\",
        "über", "naïve", "Ωmega", "日本語ユーザー", "사용자", "مستخدم", "משתמש", "🙂", "👩‍👩‍👧‍👦",
        "e\u0301", "\u00e9", "\ufeffbom", "\u200bzero-width", "ℌ𝔢𝔩𝔩𝔬", "\U0010ffff", "x" * 1000,
        "Ä" * 257, "user@example.com", "https://example.com/?a=1&b=2", "DROP TABLE units;",
    ]
    ids: list[str] = list(odd) + edge_unit_ids()
    ids += [f"user-{i}" for i in range(400)]
    ids += [str(i) for i in range(100_000, 100_150)]
    ids += [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(200)]
    alphabet = "abcXYZ019_-.:/é漢🙂"
    while len(ids) < 1000:
        candidate = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        if candidate not in ids:
            ids.append(candidate)
    assert len(ids) == len(set(ids)) == 1000
    return ids


def main() -> None:
    """Write the golden file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    units = unit_ids()
    experiments = []
    for exp in EXPERIMENTS:
        cases = []
        for unit in units:
            variant, reason, ramp_bucket, bucket = spec_assign(exp, unit)
            cases.append({
                "unit_id": unit, "variant": variant, "reason": reason,
                "ramp_bucket": ramp_bucket, "bucket": bucket,
            })
        experiments.append({
            "id": exp["id"],
            "salt": exp["salt"],
            "ramp": exp["ramp"],
            "variants": [{"key": k, "weight": w} for k, w in exp["variants"]],
            "cases": cases,
        })
    doc = {
        "description": "documented assignments (docs/DEVELOPING.md), generated by scripts/gen_assignment_golden.py",
        "experiments": experiments,
    }
    # One case per line keeps diffs readable; ensure_ascii keeps odd characters unambiguous.
    lines = [
        "{",
        f'"description": {json.dumps(doc["description"])},',
        '"experiments": [',
    ]
    for i, exp_doc in enumerate(experiments):
        head = {k: v for k, v in exp_doc.items() if k != "cases"}
        lines.append(json.dumps(head)[:-1] + ', "cases": [')
        cases_json = [json.dumps(c) for c in exp_doc["cases"]]
        lines.append(",\n".join(cases_json))
        lines.append("]}" + ("," if i < len(experiments) - 1 else ""))
    lines.append("]}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    n = sum(len(e["cases"]) for e in experiments)
    print(f"wrote {n} cases for {len(experiments)} experiments to {args.out}")


if __name__ == "__main__":
    main()
