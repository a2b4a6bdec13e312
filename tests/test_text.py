"""Text front end: normalization, real espeak-ng phonemization, the symbol table."""

from __future__ import annotations

import pickle

import pytest

from voxtrain.config import TextConfig
from voxtrain.text import Phonemizer, ProcessedText, SymbolTable, TextProcessor, clean_text, normalize_text
from voxtrain.text.number_words import cardinal, ordinal, year


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # cardinals, negatives, decimals, thousands separators
        ("I have 3 cats.", "I have three cats."),
        ("It is 105 km.", "It is one hundred five km."),
        ("1,234 people", "one thousand two hundred thirty-four people"),
        ("-5 degrees", "minus five degrees"),
        ("pi is 3.14", "pi is three point one four"),
        ("only .5 left", "only point five left"),
        ("agent 007", "agent zero zero seven"),
        ("3,000,000 ants", "three million ants"),
        # ordinals
        ("the 1st and 22nd", "the first and twenty-second"),
        ("his 3rd, 11th and 101st try", "his third, eleventh and one hundred first try"),
        # years and decades
        ("in 1984", "in nineteen eighty-four"),
        ("in 2005", "in two thousand five"),
        ("in 1905 and 1900", "in nineteen oh five and nineteen hundred"),
        ("in 2024", "in twenty twenty-four"),
        ("the 1980s", "the nineteen eighties"),
        ("from 1990-1995", "from nineteen ninety to nineteen ninety-five"),
        # currency
        ("$3.50", "three dollars, fifty cents"),
        ("It cost $1.", "It cost one dollar."),
        ("$0.01", "one cent"),
        ("$2.5 million", "two point five million dollars"),
        ("£5.99", "five pounds, ninety-nine pence"),
        ("€10", "ten euros"),
        # percentages
        ("50% off", "fifty percent off"),
        ("-2.5%", "minus two point five percent"),
        # times
        ("at 3:30 pm", "at three thirty PM"),
        ("at 10:05", "at ten oh five"),
        ("at 3:00", "at three o'clock"),
        ("by 7am.", "by seven AM."),
        ("Meet at 5 p.m. Then eat.", "Meet at five PM. Then eat."),
        # abbreviations
        ("Mr. and Mrs. Smith", "Mister and Missus Smith"),
        ("Dr. Jones lives on Elm Dr. now", "Doctor Jones lives on Elm Drive now"),
        ("I visited St. Louis.", "I visited Saint Louis."),
        ("Ali vs. Frazier", "Ali versus Frazier"),
        ("cats, dogs, etc.", "cats, dogs, et cetera."),
        ("on Jan. 5th", "on January fifth"),
        ("fruit, e.g. apples", "fruit, for example apples"),
        ("the U.S.A. is big", "the USA is big"),
        # symbols, unicode, whitespace
        ("Tom & Jerry", "Tom and Jerry"),
        ("\u201cHi,\u201d she said \u2014 twice\u2026", '"Hi," she said - twice...'),
        ("it\u2019s  fine\n\tnow ", "it's fine now"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(1_000_001) == "one million one"
    assert cardinal(999_999) == "nine hundred ninety-nine thousand nine hundred ninety-nine"
    assert ordinal(12) == "twelfth"
    assert ordinal(40) == "fortieth"
    assert year(2010) == "twenty ten"
    assert year(1100) == "eleven hundred"


def test_clean_text_keeps_digits() -> None:
    # Non-English languages only get clean-up: espeak reads their digits itself.
    assert clean_text("\u00ab 12 \u00bb  a\u2014b") == '" 12 " a - b'


@pytest.fixture(scope="module")
def phonemizer() -> Phonemizer:
    return Phonemizer()


def test_phonemize_hello_world(phonemizer: Phonemizer) -> None:
    (out,) = phonemizer.phonemize(["Hello world."])
    assert "ˈ" in out
    assert out.endswith(".")
    assert len(out.split(" ")) == 2
    assert out == out.strip() and "  " not in out


def test_phonemize_keeps_order_around_blank_texts(phonemizer: Phonemizer) -> None:
    out = phonemizer.phonemize(["", "Yes.", "  \n ", "No!", "wait - what"])
    assert out[0] == "" and out[2] == ""
    assert out[1].endswith(".") and out[3].endswith("!")
    assert " - " in out[4]


def test_phonemize_without_stress_or_punctuation() -> None:
    (out,) = Phonemizer(keep_punctuation=False, keep_stress=False).phonemize(["Hello, world!"])
    assert not set(out) & set("ˈˌ,!")


def test_phonemizer_is_picklable(phonemizer: Phonemizer) -> None:
    phonemizer.phonemize(["warm"])  # a built backend must not travel with the pickle
    clone = pickle.loads(pickle.dumps(phonemizer))
    assert clone.phonemize(["Hello world."]) == phonemizer.phonemize(["Hello world."])


_VARIED = [
    "The quick brown fox jumps over the lazy dog.",
    "How much wood would a woodchuck chuck, if a woodchuck could chuck wood?",
    "She sells seashells by the seashore; the shells she sells are surely seashells!",
    "He said, \"I can't believe it's already 10:45 pm.\"",
    "Dr. Okonkwo paid $1,299.99 for 3 tickets on Feb. 14th, 2019.",
    "Approximately 37.5% of respondents (n = 1,204) disagreed.",
    "The Tchaikovsky symphony was rehearsed in Zürich and Reykjavík.",
    "Rhythm and blues: the genre's roots go back to the 1940s.",
    "Whose thesaurus is this? It's Gwendolyn's, I think...",
    "Pneumonia, psychology and choir share unusual spellings.",
    "We'll meet at St. Pancras station at 7am, won't we?",
    "Eighth, twelfth and hundredth are tricky ordinals.",
    "The measure passed 52-48 after a long debate.",
    "A naïve café owner served crème brûlée to the fiancé.",
    "Wow! That's an enormous aquarium — truly breathtaking.",
    "Isn't it strange that 'colonel' sounds like 'kernel'?",
    "Judge Judy adjourned the hearing until Thursday.",
    "The thermometer read -12°C in Ulaanbaatar.",
    "Rural jewelry is surprisingly hard to pronounce.",
    "Sixth sick sheikh's sixth sheep's sick.",
    "I'd rather be in Worcestershire, Massachusetts or Edinburgh.",
    "Our aluminium and aluminum samples weighed 0.25 kg each.",
    "The hours were 9:00-17:00, Mon through Fri.",
    "Mississippi, Connecticut and Arkansas are states.",
    "Why? Because the anemone's anonymity was never guaranteed.",
    "They bought 1/2 a cake & 3/4 of a pie.",
    "Genghis Khan's cavalry crossed the steppe in 1206.",
    "Ouch -- that hurt; please stop!",
    "The hyperbole was, quite literally, unbelievable.",
    "Vacuum the hallway, then water the geraniums.",
]


def test_no_unknown_symbols_over_varied_text() -> None:
    processor = TextProcessor(TextConfig())
    results = processor.process(_VARIED)
    assert len(results) == len(_VARIED)
    for result in results:
        assert isinstance(result, ProcessedText)
        assert result.phonemes, result.normalized
        assert processor.symbols.unknown(result.phonemes) == [], result.phonemes
        assert processor.symbols.unk_id not in result.ids
        assert processor.symbols.decode(result.ids) == "^" + result.phonemes + "$"


def test_symbol_table_basics() -> None:
    table = SymbolTable.default()
    assert table.pad_id == 0 and table.unk_id == 1
    assert len(table) == len(set(table.symbols)) > 100
    for ch in " .,!?-ˈˌːəɚɹɾʔᵻ":
        assert ch in table


def test_unknown_char_maps_to_unk() -> None:
    table = SymbolTable.default()
    ids = table.encode("hə☃lo☃_")
    assert ids[2] == table.unk_id and ids[5] == table.unk_id
    assert ids[6] == table.unk_id  # a literal pad char never becomes padding
    assert table.pad_id not in ids
    assert table.unknown("hə☃lo☃_") == ["☃", "_"]
    assert table.unknown("həlo") == []


def test_symbol_table_round_trip(tmp_path) -> None:
    table = SymbolTable.default()
    text = "həlˈoʊ wˈɜːld, ɪts ɐ tˈɛst!"
    path = tmp_path / "symbols.json"
    table.save(path)
    loaded = SymbolTable.load(path)
    assert loaded == table
    assert loaded.symbols == table.symbols
    assert loaded.encode(text) == table.encode(text)
    assert SymbolTable.from_dict(table.to_dict()).encode(text) == table.encode(text)
    # Order is identity: a reordered table is a different table.
    custom = SymbolTable(["_", "\ufffd", "b", "a"])
    custom.save(path)
    assert SymbolTable.load(path).encode("ab") == [3, 2]
    assert custom.decode([3, 0, 2, 0]) == "ab"


def test_symbol_table_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError):
        SymbolTable(["a", "b"])
    with pytest.raises(ValueError):
        SymbolTable(["_", "\ufffd", "a", "a"])
    with pytest.raises(ValueError):
        SymbolTable.default().decode([10_000])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError):
        SymbolTable.load(bad)
