"""Generated people recorded by several source systems, with the errors records really have.

A second generator beside :func:`datasets.generate` (FEBRL's Australian names), so that the
engine is never tuned to one: names come from Faker's locale tables with their real
frequencies (``en_US`` by default: Smith is 2% of people, so common names pile up as a data
set grows; ``es_ES`` gives compound family names), name variants from the ``nicknames``
package, and every record is one source system's view of a person:

* each source system (hospital, lab, pharmacy...) has its own record number (an identifier of
  its own system, not unique per person: a system may hold a person twice); only some systems
  record the national identifier (SSN);
* a person is recorded 1-4 times; every record after the first is typed again by someone else,
  with errors in every field at once: typos (keyboard neighbours, dropped, doubled and swapped
  letters, phonetic spellings), a nickname or the middle name used as the first name, the
  middle name as an initial or left out, given and family swapped, a hyphenated or compound
  family name cut to one part, a maiden name; birth dates missing, day and month swapped, one
  digit wrong, the year one off; phone and address missing, mistyped or changed;
* households share a family name, address and phone; twins share a birth date too; a junior
  shares his father's names but not his birth date; some people share a common name and birth
  date by chance.

:func:`generate_people` is deterministic for a given seed and configuration.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

NATIONAL_ID_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
SOURCE_SYSTEM_BASE = "urn:example:mrn:"

_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_PHONETIC = (
    ("ph", "f"),
    ("f", "ph"),
    ("y", "ie"),
    ("ie", "y"),
    ("ck", "k"),
    ("c", "k"),
    ("k", "c"),
    ("s", "z"),
    ("z", "s"),
    ("ei", "ie"),
    ("ou", "ow"),
    ("th", "t"),
    ("ll", "l"),
    ("l", "ll"),
    ("nn", "n"),
    ("tt", "t"),
    ("ss", "s"),
    ("ee", "ea"),
    ("i", "y"),
    ("mc", "mac"),
)
_OCR = {"o": "0", "l": "1", "i": "1", "s": "5", "b": "6", "e": "c", "m": "rn", "n": "h"}


def _neighbours() -> dict[str, str]:
    out: dict[str, str] = {}
    for r, row in enumerate(_KEYBOARD):
        for c, ch in enumerate(row):
            near = [row[i] for i in (c - 1, c + 1) if 0 <= i < len(row)]
            for rr in (r - 1, r + 1):
                if 0 <= rr < len(_KEYBOARD):
                    near += [_KEYBOARD[rr][i] for i in (c - 1, c) if 0 <= i < len(_KEYBOARD[rr])]
            out[ch] = "".join(near)
    return out


_NEAR = _neighbours()


@dataclass(frozen=True)
class PeopleConfig:
    """How people are drawn and how badly their records are typed (rates per record)."""

    locale: str = "en_US"
    sources: tuple[str, ...] = ("hospital-a", "hospital-b", "clinic", "lab", "pharmacy")
    national_id_sources: tuple[str, ...] = ("hospital-a", "hospital-b", "clinic")
    records_per_person: tuple[tuple[int, float], ...] = ((1, 0.62), (2, 0.24), (3, 0.1), (4, 0.04))
    same_source: float = 0.15  # a repeat record comes from a system that has the person already
    middle_name: float = 0.6  # people with a middle name
    compound_family: float = 0.0  # family names of two parts ("Garcia Lopez", "Smith-Jones")
    # people
    household: float = 0.12
    twin: float = 0.01
    junior: float = 0.01
    namesake: float = 0.01  # same common name and birth date as an earlier person, by chance
    # record errors
    given_typo: float = 0.3
    family_typo: float = 0.3
    second_typo: float = 0.3  # given one typo, another in the same name
    nickname: float = 0.1
    middle_as_first: float = 0.05
    middle_initial: float = 0.3
    middle_dropped: float = 0.3
    swap_given_family: float = 0.03
    family_part: float = 0.3  # compound family names: one part only
    married: float = 0.1  # women: a new family name, the old one kept as maiden name (or not)
    birth_missing: float = 0.05
    birth_swap: float = 0.06
    birth_digit: float = 0.1
    birth_year: float = 0.04
    gender_missing: float = 0.05
    gender_wrong: float = 0.01
    phone_missing: float = 0.35
    phone_typo: float = 0.1
    phone_changed: float = 0.1
    address_missing: float = 0.3
    address_typo: float = 0.2
    moved: float = 0.1
    national_id_missing: float = 0.2
    national_id_typo: float = 0.05
    upper_case: float = 0.2


@dataclass
class _Person:
    given: str
    middle: str | None
    family: str
    gender: str
    birth: dt.date
    phone: str | None
    national_id: str
    line: str
    city: str
    state: str
    postcode: str
    maiden: str | None = None


@dataclass
class PeopleSet:
    """Patients (FHIR dicts) and truth rows (patient id, entity id)."""

    name: str
    patients: list[dict[str, Any]] = field(default_factory=list)
    truth: list[tuple[str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


class _Names:
    """Weighted name and place tables of one Faker locale."""

    def __init__(self, locale: str, rng: random.Random) -> None:
        from importlib import import_module

        person = import_module(f"faker.providers.person.{locale}").Provider
        address = import_module(f"faker.providers.address.{locale}").Provider
        self.rng = rng

        def table(values: Any) -> tuple[list[str], list[float]]:
            if isinstance(values, dict):
                names = list(values)
                weights = [float(w) for w in values.values()]
            else:
                names = sorted(set(values))
                # no frequencies given: a Zipf-like skew, as real populations have
                weights = [1.0 / (rank + 5) for rank in range(len(names))]
            cumulative, total = [], 0.0
            for w in weights:
                total += w
                cumulative.append(total)
            return names, cumulative

        self.female = table(person.first_names_female)
        self.male = table(person.first_names_male)
        self.family = table(person.last_names)
        streets = getattr(address, "street_names", None) or getattr(address, "last_names", ())
        self.streets = list(streets) or list(self.family[0])
        self.suffixes = list(getattr(address, "street_suffixes", ("Street",)))
        self.cities = table(
            list(getattr(address, "cities", ())) or [f"{n} City" for n in self.family[0][:300]]
        )
        self.states = list(getattr(address, "states_abbr", ("XX",)))

    def draw(self, which: tuple[list[str], list[float]]) -> str:
        return self.rng.choices(which[0], cum_weights=which[1])[0]


def _nicknames() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    from nicknames import NickNamer

    namer = NickNamer()
    lookup = namer.nickname_lookup
    canonical = namer.canonical_lookup
    return (
        {k: sorted(v) for k, v in lookup.items()},
        {k: sorted(v) for k, v in canonical.items()},
    )


class _Typist:
    """Errors a person makes typing a record."""

    def __init__(self, rng: random.Random, config: PeopleConfig) -> None:
        self.rng = rng
        self.config = config
        self.nicks, self.canonicals = _nicknames()

    def typo(self, text: str) -> str:
        rng = self.rng
        if len(text) < 2:
            return text
        lower = text.lower()
        for _ in range(20):
            kind = rng.random()
            i = rng.randrange(len(text))
            if kind < 0.3:  # keyboard neighbour
                near = _NEAR.get(lower[i])
                if not near:
                    continue
                out = text[:i] + rng.choice(near) + text[i + 1 :]
            elif kind < 0.45 and len(text) > 3:  # dropped letter
                out = text[:i] + text[i + 1 :]
            elif kind < 0.6:  # doubled letter
                out = text[:i] + text[i] + text[i:]
            elif kind < 0.75 and i < len(text) - 1:  # swapped neighbours
                out = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
            elif kind < 0.92:  # a phonetic spelling
                found = [(a, b) for a, b in _PHONETIC if a in lower]
                if not found:
                    continue
                a, b = rng.choice(found)
                at = lower.find(a)
                out = text[:at] + b + text[at + len(a) :]
            else:  # scanned or misread
                found_ocr = [k for k, ch in enumerate(lower) if ch in _OCR and k > 0]
                if not found_ocr:
                    continue
                k = rng.choice(found_ocr)
                out = text[:k] + _OCR[lower[k]] + text[k + 1 :]
            if out.lower() != lower:
                return out
        return text + rng.choice("aeiou")

    def name(self, text: str, rate: float) -> str:
        if self.rng.random() < rate:
            text = self.typo(text)
            if self.rng.random() < self.config.second_typo:
                text = self.typo(text)
        return text

    def variant(self, given: str) -> str | None:
        """A nickname of ``given``, or its full form when ``given`` is a nickname."""
        key = given.lower()
        options = self.nicks.get(key) or self.canonicals.get(key)
        if not options:
            return None
        return self.rng.choice(options).title()

    def digits(self, value: str) -> str:
        positions = [k for k, ch in enumerate(value) if ch.isdigit()]
        i = self.rng.choice(positions)
        return value[:i] + self.rng.choice("0123456789".replace(value[i], "")) + value[i + 1 :]


def _valid(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


class _Generator:
    def __init__(self, seed: int, config: PeopleConfig) -> None:
        self.rng = random.Random(seed)
        self.config = config
        self.names = _Names(config.locale, self.rng)
        self.typist = _Typist(self.rng, config)
        self.stats: Counter[str] = Counter()
        self.ssn = self.rng.sample(range(10**8, 10**9), 1)[0]

    def national_id(self) -> str:
        self.ssn = (self.ssn + self.rng.randrange(1, 7919)) % 900_000_000 + 100_000_000
        s = f"{self.ssn:09d}"
        return f"{s[:3]}-{s[3:5]}-{s[5:]}"

    def phone(self) -> str:
        r = self.rng
        return f"({r.randrange(201, 990)}) {r.randrange(200, 999)}-{r.randrange(10000):04d}"

    def family_name(self) -> str:
        c = self.config
        first = self.names.draw(self.names.family)
        if self.rng.random() < c.compound_family:
            second = self.names.draw(self.names.family)
            joiner = "-" if self.rng.random() < 0.3 else " "
            return f"{first}{joiner}{second}"
        return first

    def address(self) -> tuple[str, str, str, str]:
        r, n = self.rng, self.names
        line = f"{r.randrange(1, 9999)} {r.choice(n.streets)} {r.choice(n.suffixes)}"
        return line, n.draw(n.cities), r.choice(n.states), f"{r.randrange(10000, 99999)}"

    def person(self, earlier: list[_Person]) -> _Person:
        r, c, n = self.rng, self.config, self.names
        gender = r.choice(("female", "male"))
        table = n.female if gender == "female" else n.male
        given = n.draw(table)
        middle = n.draw(table) if r.random() < c.middle_name else None
        while middle == given:
            middle = n.draw(table)
        birth = dt.date.fromordinal(r.randint(dt.date(1930, 1, 1).toordinal(), 738000))
        line, city, state, postcode = self.address()
        p = _Person(
            given,
            middle,
            self.family_name(),
            gender,
            birth,
            self.phone() if r.random() < 0.85 else None,
            self.national_id(),
            line,
            city,
            state,
            postcode,
        )
        roll = r.random()
        if earlier and roll < c.household + c.twin + c.junior + c.namesake:
            other = r.choice(earlier)
            if roll < c.namesake:  # a namesake: same name and birth date, nothing else
                p.given, p.family, p.birth, p.gender = (
                    other.given,
                    other.family,
                    other.birth,
                    other.gender,
                )
                p.middle = None if r.random() < 0.5 else p.middle
                self.stats["namesakes"] += 1
                return p
            p.family, p.line, p.city, p.state, p.postcode = (
                other.family,
                other.line,
                other.city,
                other.state,
                other.postcode,
            )
            if r.random() < 0.7:
                p.phone = other.phone
            self.stats["household members"] += 1
            if roll < c.namesake + c.twin:
                p.birth = other.birth
                self.stats["twins"] += 1
            elif roll < c.namesake + c.twin + c.junior:
                p.given, p.gender = other.given, other.gender
                p.middle = other.middle if r.random() < 0.5 else p.middle
                year = min(other.birth.year + r.randint(18, 40), 2020)
                # a father born on 29 February: his junior on the 28th (a 1,000,000 set has one)
                day = min(other.birth.day, 28) if other.birth.month == 2 else other.birth.day
                p.birth = other.birth.replace(year=year, day=day)
                self.stats["juniors"] += 1
        return p

    def record(self, p: _Person, first: bool) -> dict[str, Any]:
        """One source record of ``p``: the first as registered, later ones typed again."""
        r, c, t = self.rng, self.config, self.typist
        rate = 0.25 if first else 1.0  # the first record has errors too, fewer
        given, middle, family = p.given, p.middle, p.family
        maiden = p.maiden
        if p.gender == "female" and not first and r.random() < c.married * rate:
            maiden, family = family, self.names.draw(self.names.family)
            if r.random() < 0.5:
                maiden = None  # the old name is not recorded
        if not first and r.random() < c.nickname:
            given = t.variant(given) or given
        if middle and r.random() < c.middle_as_first * rate:
            given, middle = middle, (None if r.random() < 0.5 else given)
        if middle and r.random() < c.middle_dropped * rate:
            middle = None
        elif middle and r.random() < c.middle_initial * rate:
            middle = middle[0]
        if (" " in family or "-" in family) and r.random() < c.family_part * rate:
            family = r.choice(family.replace("-", " ").split())
        given = t.name(given, c.given_typo * rate)
        family = t.name(family, c.family_typo * rate)
        if middle and len(middle) > 1:
            middle = t.name(middle, c.given_typo * rate)
        if r.random() < c.swap_given_family * rate:
            given, family = family, given
        if r.random() < c.upper_case:
            given, family = given.upper(), family.upper()
            middle = middle.upper() if middle else middle
        birth: str | None = p.birth.isoformat()
        roll = r.random()
        b = p.birth
        if roll < c.birth_missing * rate:
            birth = None
        elif roll < (c.birth_missing + c.birth_swap) * rate and b.day <= 12 and b.day != b.month:
            birth = dt.date(b.year, b.day, b.month).isoformat()
        elif roll < (c.birth_missing + c.birth_swap + c.birth_digit) * rate:
            digits = b.strftime("%Y%m%d")
            for _ in range(30):
                new = t.digits(digits[2:])
                found = _valid(int(digits[:2] + new[:2]), int(new[2:4]), int(new[4:]))
                if found is not None and found != b and found.year <= 2024:
                    birth = found.isoformat()
                    break
        elif roll < (c.birth_missing + c.birth_swap + c.birth_digit + c.birth_year) * rate:
            found = _valid(b.year + r.choice((-1, 1)), b.month, b.day)
            birth = found.isoformat() if found else birth
        gender: str | None = p.gender
        if r.random() < c.gender_missing * rate:
            gender = None
        elif r.random() < c.gender_wrong * rate:
            gender = "male" if gender == "female" else "female"
        phone = p.phone
        if phone and r.random() < c.phone_missing:
            phone = None
        elif phone and r.random() < c.phone_changed * rate:
            phone = self.phone()
        elif phone and r.random() < c.phone_typo * rate:
            phone = t.digits(phone)
        line: str | None = p.line
        city: str | None = p.city
        postcode: str | None = p.postcode
        if r.random() < c.address_missing:
            line = city = postcode = None
        elif r.random() < c.moved * rate:
            line, city, _, postcode = self.address()
        elif r.random() < c.address_typo * rate:
            line = t.typo(p.line)
        return {
            "given": given,
            "middle": middle,
            "family": family,
            "maiden": maiden,
            "birth": birth,
            "gender": gender,
            "phone": phone,
            "line": line,
            "city": city,
            "state": p.state if city else None,
            "postcode": postcode,
        }

    def national_id_of(self, p: _Person, first: bool) -> str | None:
        c = self.config
        rate = 0.25 if first else 1.0
        if self.rng.random() < c.national_id_missing:
            return None
        if self.rng.random() < c.national_id_typo * rate:
            return self.typist.digits(p.national_id)
        return p.national_id


def _patient(rec_id: str, source: str, number: str, fields: dict[str, Any], ssn: str | None) -> Any:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": rec_id}
    identifiers = [{"system": SOURCE_SYSTEM_BASE + source, "value": number}]
    if ssn:
        identifiers.append({"system": NATIONAL_ID_SYSTEM, "value": ssn})
    patient["identifier"] = identifiers
    given = [g for g in (fields["given"], fields["middle"]) if g]
    name: dict[str, Any] = {"use": "official", "family": fields["family"]}
    if given:
        name["given"] = given
    names = [name]
    if fields["maiden"]:
        names.append({"use": "maiden", "family": fields["maiden"]})
    patient["name"] = names
    if fields["gender"]:
        patient["gender"] = fields["gender"]
    if fields["birth"]:
        patient["birthDate"] = fields["birth"]
    if fields["phone"]:
        patient["telecom"] = [{"system": "phone", "value": fields["phone"]}]
    if fields["line"]:
        address = {"line": [fields["line"]], "city": fields["city"], "state": fields["state"]}
        address["postalCode"] = fields["postcode"]
        patient["address"] = [address]
    return patient


def generate_people(
    n_records: int, *, seed: int = 7, config: PeopleConfig | None = None, name: str = "people"
) -> PeopleSet:
    """About ``n_records`` Patients (exactly, the last person's records cut if need be)."""
    config = config or PeopleConfig()
    gen = _Generator(seed, config)
    r = gen.rng
    counts, weights = zip(*config.records_per_person, strict=True)
    people: list[_Person] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    numbers: Counter[str] = Counter()
    while len(rows) < n_records:
        person = gen.person(people[-5000:])
        entity = len(people)
        people.append(person)
        k = min(r.choices(counts, weights)[0], n_records - len(rows))
        used: list[str] = []
        for index in range(k):
            if used and r.random() < config.same_source:
                source = r.choice(used)
            else:
                source = r.choice([s for s in config.sources if s not in used] or config.sources)
            used.append(source)
            numbers[source] += 1
            fields = gen.record(person, first=index == 0)
            ssn = gen.national_id_of(person, index == 0)
            if source not in config.national_id_sources:
                ssn = None
            rows.append((entity, {"source": source, "number": f"{numbers[source]:08d}", **fields}))
            rows[-1][1]["ssn"] = ssn
        if k > 1:
            gen.stats["people recorded more than once"] += 1
    order = list(range(len(rows)))
    r.shuffle(order)
    out = PeopleSet(name, stats=gen.stats)
    out.stats["people"] = len(people)
    for i, index in enumerate(order, start=1):
        entity, fields = rows[index]
        rec_id = f"{name[:2]}-{i:07d}"
        out.patients.append(
            _patient(rec_id, fields["source"], fields["number"], fields, fields["ssn"])
        )
        out.truth.append((rec_id, f"p{entity}"))
    return out


HEALTHCARE = PeopleConfig()
"""Typo-heavy extracts of several source systems (US names)."""

COMPOUND = replace(
    PeopleConfig(),
    locale="es_ES",
    sources=("centro-salud", "hospital", "laboratorio"),
    national_id_sources=("centro-salud", "hospital"),
    compound_family=0.85,
    family_part=0.35,
    married=0.0,
    given_typo=0.15,
    family_typo=0.15,
    household=0.2,
    twin=0.015,
)
"""Spanish names: two family names (one dropped in some records), larger households."""
