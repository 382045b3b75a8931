"""Files of Patients for the import, export and re-match tests: people, some recorded twice
with a typo or a field missing (so imports link, queue potential matches and make new
persons), deterministic for a seed."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import orjson

GIVEN = [
    "Aisha", "Brian", "Chloe", "Daniel", "Esther", "Farid", "Grace", "Hassan", "Irene", "James",
    "Kezia", "Liam", "Miriam", "Nathan", "Olive", "Peter", "Rehema", "Samuel", "Tendai", "Umar",
    "Violet", "Walter", "Yusuf", "Zawadi", "Amos", "Beatrice", "Cyrus", "Dorcas", "Elijah",
    "Faith",
]  # fmt: skip
FAMILY = [
    "Achieng", "Banda", "Chanda", "Dlamini", "Eze", "Fofana", "Gitau", "Hakizimana", "Ibrahim",
    "Juma", "Kamau", "Lungu", "Mwangi", "Nkosi", "Okafor", "Phiri", "Quaye", "Ruto", "Sithole",
    "Tembo", "Uwimana", "Vilakazi", "Wanjiru", "Xaba", "Yeboah", "Zulu", "Abebe", "Bekele",
    "Chirwa", "Diallo", "Ekwueme", "Farah", "Gatete", "Habimana", "Ismail", "Jere",
]  # fmt: skip
NATIONAL_ID = "http://example.org/fhir/sid/national-id"


def _typo(text: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(text))
    return text[:i] + text[i + 1 :] if rng.random() < 0.5 else text[:i] + text[i] + text[i:]


def people(n: int, seed: int = 7, duplicates: float = 0.3) -> list[dict[str, Any]]:
    """``n`` Patients (``id`` ``p-<k>``), about ``duplicates`` of them a second record of an
    earlier person with small differences."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    originals: list[dict[str, Any]] = []
    for k in range(1, n + 1):
        if originals and rng.random() < duplicates:
            base = rng.choice(originals)
            patient = orjson.loads(orjson.dumps(base))
            name = patient["name"][0]
            roll = rng.random()
            if roll < 0.4:
                name["given"] = [_typo(name["given"][0], rng)]
            elif roll < 0.7:
                patient.pop("telecom", None)
            elif roll < 0.85:
                name["family"] = _typo(name["family"], rng)
            elif roll < 0.93:
                patient.pop("identifier", None)
            else:  # little left to go on: a potential match at best
                patient.pop("identifier", None)
                patient.pop("telecom", None)
                name["given"] = [_typo(name["given"][0], rng)]
                name["family"] = _typo(name["family"], rng)
                day = int(patient["birthDate"][-2:])
                patient["birthDate"] = patient["birthDate"][:-2] + f"{day % 28 + 1:02d}"
        else:
            year = rng.randint(1940, 2015)
            patient = {
                "resourceType": "Patient",
                "identifier": [{"system": NATIONAL_ID, "value": f"{rng.randrange(10**8, 10**9)}"}],
                "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}],
                "gender": rng.choice(["male", "female"]),
                "birthDate": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "telecom": [{"system": "phone", "value": f"07{rng.randrange(10**7, 10**8)}"}],
            }
            originals.append(patient)
        patient["id"] = f"p-{k}"
        out.append(patient)
    return out


def write_ndjson(path: Path, patients: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in patients))
    return path


def write_csv(path: Path, patients: list[dict[str, Any]]) -> Path:
    """OpenCR's benchmark columns (``rec_id,sex,date_of_birth,given_name,surname,
    phone_number,uganda_nin``)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "rec_id",
                "sex",
                "date_of_birth",
                "given_name",
                "surname",
                "phone_number",
                "uganda_nin",
            ]
        )
        for p in patients:
            name = p["name"][0]
            writer.writerow(
                [
                    p["id"],
                    p["gender"][0],
                    p["birthDate"].replace("-", ""),
                    " ".join(name["given"]),
                    name["family"],
                    (p.get("telecom") or [{}])[0].get("value", ""),
                    (p.get("identifier") or [{}])[0].get("value", ""),
                ]
            )
    return path
