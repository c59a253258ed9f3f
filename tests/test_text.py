"""Spelling out numbers for prompts, and normalising text for word error rate."""

from __future__ import annotations

import pytest

from chorus.text import normalize, spell_out, word_error_rate


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
        ("$1 or $0.99", "one dollar or ninety-nine cents"),
        ("£3.01 and €40", "three pounds and one penny and forty euros"),
        ("$3.5 million", "three point five million dollars"),
        ("Up 12.5% to 40%", "Up twelve point five percent to forty percent"),
        ("She came 3rd, then 21st.", "She came third, then twenty-first."),
        ("In 1999 and since 2024", "In nineteen ninety-nine and since twenty twenty-four"),
        ("June 1905", "June nineteen oh-five"),
        ("in the 1990s", "in the nineteen nineties"),
        ("At 3:30, 9:05 or 12:00.", "At three thirty, nine oh five or twelve o'clock."),
        ("at 7:15 p.m.", "at seven fifteen p.m."),
        ("at 1045 or before 9.15", "at ten forty-five or before nine fifteen"),
        ("at 1200 meters", "at one thousand two hundred meters"),
        ("March 3rd, 2024", "March third, twenty twenty-four"),
        ("on 14 March", "on the fourteenth of March"),
        ("on 2023-07-14", "on July fourteenth twenty twenty-three"),
        ("on 12/25/2023", "on December twenty-fifth twenty twenty-three"),
        (
            "1,234,567 users",
            "one million two hundred and thirty-four thousand five hundred and sixty-seven users",
        ),
        ("1523 people", "one thousand five hundred and twenty-three people"),
        ("pi is 3.14, not 3.10", "pi is three point one four, not three point one zero"),
        ("pages 10-20 at -5 degrees", "pages ten to twenty at minus five degrees"),
        ("COVID-19", "COVID-nineteen"),
        ("No numbers here.", "No numbers here."),
    ],
)
def test_spell_out(written: str, spoken: str) -> None:
    assert spell_out(written) == spoken


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The meeting starts at 3:30 p.m.", "the meeting starts at three thirty PM"),
        ("at 3.30pm", "at three thirty p.m."),
        ("leaves at 10.45", "leaves at ten forty-five"),
        ("Tickets cost $12.50", "tickets cost twelve dollars and fifty cents"),
        ("Twenty-four", "twenty four"),
        ("It’s — well — o’clock!", "its well oclock"),
        ("Born on March 3, 2024.", "born on march third twenty twenty four"),
        ("She was in the U.S. in 1999", "she was in the US in nineteen ninety-nine"),
        ("salt & pepper", "salt and pepper"),
        ("  many\tspaces\n here ", "many spaces here"),
    ],
)
def test_normalize_makes_spelling_variants_equal(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


def test_normalize_output_is_plain_lowercase_words() -> None:
    assert normalize("Hello, World! It's $5.") == "hello world its five dollars"


def test_word_error_rate() -> None:
    assert word_error_rate("It costs $12.50.", "it costs twelve dollars and fifty cents") == 0.0
    assert word_error_rate("a b c d", "a x c d") == 0.25  # one substitution
    assert word_error_rate("a b c d", "a c d") == 0.25  # one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions
    assert word_error_rate("one two", "three four five six") == 2.0  # WER is not capped
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "extra words") == 2.0
