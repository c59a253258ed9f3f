"""Text normalisation for TTS prompts and for word error rate.

The validator sends miners prompts with numbers already spelled out (``spell_out``), so
every miner reads "$12.50" the same way. Before WER, the prompt and the ASR transcript both
go through ``normalize``: Whisper writes "12.50 dollars" or "$12.50" for the same speech, and
only the words, not their spelling, should count.
"""

from __future__ import annotations

import re

from num2words import num2words

# fmt: off
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
# fmt: on
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SCALES = r"(?:thousand|million|billion|trillion)"
# symbol: (one unit, many units, one hundredth, many hundredths)
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"

CURRENCY_RE = re.compile(
    rf"([$£€])\s?({NUMBER})(?:\.(\d{{1,2}}))?(?:\s+({SCALES})\b)?", re.IGNORECASE
)
PERCENT_RE = re.compile(rf"(-?(?:{NUMBER})(?:\.\d+)?)\s?%")
# "3:30", "3:30 pm", and Whisper's "3.30pm" (a dot only with am/pm: "3.14" is a decimal)
TIME_RE = re.compile(
    r"\b(\d{1,2})(?::([0-5]\d)(?:\s*([ap])\.?m\b\.?)?|\.([0-5]\d)\s*([ap])\.?m\b\.?)",
    re.IGNORECASE,
)
# Whisper also writes "at 10.45" or "at 1045" for a spoken time; after "at", "before"...
# a 1-12 hour with two minute digits is read as a time ("at 1200 meters" is not one).
CUED_TIME_RE = re.compile(
    r"\b(at|by|before|after|until|from)\s+(1[0-2]|0?[1-9])(\.?)([0-5]\d)\b(?![.,]\d)",
    re.IGNORECASE,
)
ISO_DATE_RE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
US_DATE_RE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
MONTH_RE = "|".join(MONTHS)
DAY_MONTH_RE = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({MONTH_RE})\b")
MONTH_DAY_RE = re.compile(rf"\b({MONTH_RE})\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?!\s*[:\d])")
ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
DECADE_RE = re.compile(r"\b(1[1-9]|20)(\d0)'?s\b")
# A bare 1100-2099 is read as a year only after a word or date that introduces one ("in 1999",
# "June 1999", "March third, 2024"); "1523 people" stays a quantity.
YEAR_CUES = r"in|since|by|from|until|till|of|year|before|after|around|circa|during|to|and"
YEAR_RE = re.compile(
    rf"(\b(?:{YEAR_CUES}|{MONTH_RE})\s+|\b(?:{MONTH_RE})\s+[a-z-]+,\s*)"
    r"(1[1-9]\d\d|20\d\d)\b(?!,\d|\.\d)",
    re.IGNORECASE,
)
RANGE_RE = re.compile(rf"\b({NUMBER})\s?[-–]\s?({NUMBER})\b")
DECIMAL_RE = re.compile(rf"(?<![\d.])(-?)({NUMBER})\.(\d+)\b")
INTEGER_RE = re.compile(rf"(?<![\w.])(-?)({NUMBER})\b")


def _words(text: str) -> str:
    """num2words output without its commas: in a prompt they would become pauses."""
    return text.replace(",", "")


def _cardinal(digits: str) -> str:
    return _words(num2words(int(digits.replace(",", ""))))


def _ordinal(digits: str) -> str:
    return _words(num2words(int(digits.replace(",", "")), to="ordinal"))


def _year(digits: str) -> str:
    return _words(num2words(int(digits), to="year"))


def _decimal(whole: str, fraction: str, sign: str = "") -> str:
    """Digit by digit after the point ("3.10" is "three point one zero"), as people read it."""
    minus = "minus " if sign else ""
    return f"{minus}{_cardinal(whole)} point {' '.join(DIGITS[int(d)] for d in fraction)}"


def _currency(m: re.Match) -> str:
    one, many, cent, cents = CURRENCIES[m.group(1)]
    whole, fraction, scale = m.group(2), m.group(3), m.group(4)
    if scale:  # "$3.5 million" is "three point five million dollars"
        amount = _decimal(whole, fraction) if fraction else _cardinal(whole)
        return f"{amount} {scale.lower()} {many}"
    units = int(whole.replace(",", ""))
    hundredths = int(fraction.ljust(2, "0")) if fraction else 0
    parts = []
    if units or not hundredths:
        parts.append(f"{_cardinal(whole)} {one if units == 1 else many}")
    if hundredths:
        parts.append(f"{_cardinal(str(hundredths))} {cent if hundredths == 1 else cents}")
    return " and ".join(parts)


def _percent(m: re.Match) -> str:
    number = m.group(1)
    sign = "-" if number.startswith("-") else ""
    number = number.lstrip("-")
    if "." in number:
        whole, fraction = number.split(".")
        return f"{_decimal(whole, fraction, sign)} percent"
    return f"{'minus ' if sign else ''}{_cardinal(number)} percent"


def _clock(hour: str, minute: int, half: str | None = None) -> str:
    """A clock time as said: "three thirty", "nine oh five", "twelve o'clock", "seven p.m."."""
    said = _cardinal(hour)
    if minute == 0:
        said += "" if half else " o'clock"
    elif minute < 10:
        said += f" oh {DIGITS[minute]}"
    else:
        said += f" {_cardinal(str(minute))}"
    return f"{said} {half.lower()}.m." if half else said


def _time(m: re.Match) -> str:
    return _clock(m.group(1), int(m.group(2) or m.group(4)), m.group(3) or m.group(5))


def _cued_time(m: re.Match) -> str:
    cue, hour, dot, minute = m.groups()
    if not dot and minute == "00":
        return m.group(0)
    return f"{cue} {_clock(hour, int(minute))}"


def _date(year: str, month: str, day: str) -> str | None:
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        return None
    return f"{MONTHS[int(month) - 1]} {_ordinal(day)} {_year(year)}"


def _iso_date(m: re.Match) -> str:
    return _date(m.group(1), m.group(2), m.group(3)) or m.group(0)


def _us_date(m: re.Match) -> str:
    return _date(m.group(3), m.group(1), m.group(2)) or m.group(0)


def _decade(m: re.Match) -> str:
    said = _year(m.group(1) + m.group(2))
    return said[:-1] + "ies" if said.endswith("y") else said + "s"


def spell_out(text: str) -> str:
    """Rewrite numbers, money, percentages, times, dates, ordinals and years as words.

    Everything else (case, punctuation) is kept, so the result is still a natural prompt.
    The order matters: the specific patterns (money, dates, times) run before plain numbers.
    """
    text = CURRENCY_RE.sub(_currency, text)
    text = PERCENT_RE.sub(_percent, text)
    text = ISO_DATE_RE.sub(_iso_date, text)
    text = US_DATE_RE.sub(_us_date, text)
    text = TIME_RE.sub(_time, text)
    text = CUED_TIME_RE.sub(_cued_time, text)
    text = DAY_MONTH_RE.sub(lambda m: f"the {_ordinal(m.group(1))} of {m.group(2)}", text)
    text = MONTH_DAY_RE.sub(lambda m: f"{m.group(1)} {_ordinal(m.group(2))}", text)
    text = ORDINAL_RE.sub(lambda m: _ordinal(m.group(1)), text)
    text = DECADE_RE.sub(_decade, text)
    text = YEAR_RE.sub(lambda m: m.group(1) + _year(m.group(2)), text)
    text = RANGE_RE.sub(lambda m: f"{_cardinal(m.group(1))} to {_cardinal(m.group(2))}", text)
    text = DECIMAL_RE.sub(lambda m: _decimal(m.group(2), m.group(3), m.group(1)), text)
    return INTEGER_RE.sub(lambda m: ("minus " if m.group(1) else "") + _cardinal(m.group(2)), text)


APOSTROPHES_RE = re.compile(r"[‘’ʼ`´']")
HYPHENS_RE = re.compile(r"[-‐‑‒–—―/]")
NON_WORD_RE = re.compile(r"[^\w\s]")
INITIALISM_RE = re.compile(r"\b(?:[a-z]\.){2,}")


def normalize(text: str) -> str:
    """Lowercase words only: numbers spelled out, no punctuation, single spaces.

    Hyphens become spaces ("twenty-four" == "twenty four"), apostrophes and the dots of
    initialisms vanish ("o'clock" == "oclock", "p.m." == "PM"), so spelling variants of the
    same speech compare equal.
    """
    text = spell_out(text).replace("&", " and ")
    text = APOSTROPHES_RE.sub("", text.lower())
    text = INITIALISM_RE.sub(lambda m: m.group(0).replace(".", ""), text)  # "p.m." is "pm"
    text = HYPHENS_RE.sub(" ", text)
    text = NON_WORD_RE.sub(" ", text).replace("_", " ")
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after ``normalize``.

    It can exceed 1 (a transcript longer than the reference); callers scoring in [0, 1]
    take ``min(wer, 1)``. With an empty reference it is the number of inserted words.
    """
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(len(ref), 1)
