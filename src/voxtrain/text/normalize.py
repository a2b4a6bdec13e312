"""English text normalization: everything a reader says but the text does not spell out.

espeak-ng can read digits itself, but it does not know that "1984" is a year, that "$3.50"
has cents, or that "Dr." is a title, and training transcripts must match what the speaker
said. The passes run in a fixed order because later ones rely on earlier ones having
consumed their patterns (times before plain numbers, currency before percentages, ...).
"""

from __future__ import annotations

import re

from voxtrain.text.number_words import (
    cardinal,
    digits_to_words,
    number_to_words,
    ordinal,
    plural_from_words,
    year,
)

# ---------------------------------------------------------------- unicode clean-up

_CHAR_MAP = str.maketrans(
    {
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4\u0060", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033", '"'),
        **dict.fromkeys("\u2010\u2011\u2012\u2212", "-"),
        **dict.fromkeys("\u00a0\u2002\u2003\u2009\u202f\u3000\t\r\n\f\v", " "),
        **dict.fromkeys("\u200b\u200c\u200d\ufeff\u00ad", ""),
        "\u2026": "...",
    }
)
# En/em dashes between digits are ranges ("1990–1995"); anywhere else they are pauses.
_DASH_BETWEEN_DIGITS = re.compile(r"(?<=\d)\s?[\u2013\u2014\u2015]\s?(?=\d)")
_PAUSE_DASH = re.compile(r"\s*(?:[\u2013\u2014\u2015]|-{2,})\s*")


def clean_text(text: str) -> str:
    """Language-neutral clean-up: ASCII quotes and dashes, one space between words."""
    text = text.translate(_CHAR_MAP)
    text = _DASH_BETWEEN_DIGITS.sub("-", text)
    text = _PAUSE_DASH.sub(" - ", text)
    text = re.sub(r"\s+", " ", text)
    # Numbers may leave "five ," or "( six": glue punctuation back to its word.
    text = re.sub(r" +([,.!?;:)\]}])(?!\d)", r"\1", text)
    text = re.sub(r"([(\[{]) +", r"\1", text)
    return text.strip()


# ---------------------------------------------------------------- abbreviations

# These lead into the next word (a name, the other side of "vs."), so their period only
# ends a sentence at the very end of the text.
_TITLES = {
    "vs": "versus",
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "dr": "doctor",
    "prof": "professor",
    "capt": "captain",
    "gen": "general",
    "lt": "lieutenant",
    "col": "colonel",
    "sgt": "sergeant",
    "rev": "reverend",
    "hon": "honorable",
    "gov": "governor",
    "sen": "senator",
    "rep": "representative",
    "mt": "mount",
}
_WORDS = {
    "etc": "et cetera",
    "jr": "junior",
    "sr": "senior",
    "approx": "approximately",
    "dept": "department",
    "inc": "incorporated",
    "ltd": "limited",
    "corp": "corporation",
    "ave": "avenue",
    "blvd": "boulevard",
}
# Month names are only abbreviations when capitalized ("mar." is not "March").
_MONTHS = {
    "Jan": "January",
    "Feb": "February",
    "Mar": "March",
    "Apr": "April",
    "Jun": "June",
    "Jul": "July",
    "Aug": "August",
    "Sep": "September",
    "Sept": "September",
    "Oct": "October",
    "Nov": "November",
    "Dec": "December",
}
_DOTTED = [
    (re.compile(r"\be\.\s?g\.", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.\s?e\.", re.IGNORECASE), "that is"),
    (re.compile(r"\ba\.k\.a\.", re.IGNORECASE), "also known as"),
]
# "U.S.A." -> "USA": espeak spells capitals, but would keep every period as a pause.
_DOTTED_ACRONYM = re.compile(r"\b(?:[A-Za-z]\.){2,}")
_ABBREVIATION = re.compile(r"\b([A-Za-z]{2,5})\.")
_NUMBER_SIGN = re.compile(r"\bNo\.\s?(?=\d)|#(?=\d)", re.IGNORECASE)
_NEXT_STARTS_SENTENCE = re.compile(r"\s+[\"'(]?[A-Z]")


def _keep_period(text: str, end: int, title: bool) -> bool:
    """Whether the period eaten with an abbreviation was also the sentence's full stop."""
    rest = text[end:]
    if not rest.strip(" \"')]"):
        return True
    return not title and _NEXT_STARTS_SENTENCE.match(rest) is not None


def _match_case(source: str, words: str) -> str:
    return words[0].upper() + words[1:] if source[:1].isupper() else words


def _word_before(text: str, start: int) -> tuple[str, bool]:
    """The word before `start` and whether it opens a sentence (its capital says nothing)."""
    match = re.search(r"(\S+)\s+$", text[:start])
    if match is None:
        return "", True
    head = text[: match.start()].rstrip()
    return match.group(1), not head or head[-1] in ".!?"


# Capitalized at a sentence start, these still never name a street ("The Dr. said").
_FUNCTION_WORDS = set(
    "the a an this that my our your his her their in on at to for with by from and or but of".split()
)


def _street_or_title(text: str, start: int, end: int) -> bool:
    """True when "St."/"Dr." names a street ("Main St.", "Elm Dr. is") rather than a person.

    Streets follow a number or a capitalized name; titles precede a capitalized name. When
    both words are capitalized, a capital that merely opens the sentence ("In St. Louis")
    does not count as a name.
    """
    prev, opens_sentence = _word_before(text, start)
    if not prev or prev[-1] in ".!?,;:" or prev.lower() in _FUNCTION_WORDS:
        return False
    if prev[0].isdigit():
        return True
    if re.match(r"\s*[A-Z]", text[end:]) is None:
        return prev[0].isupper()
    return prev[0].isupper() and not opens_sentence


def _expand_abbreviation(match: re.Match[str]) -> str:
    text, word = match.string, match.group(1)
    key = word.lower()
    if word in _MONTHS or (word.isupper() and word.title() in _MONTHS):
        words, title = _MONTHS[word.title()], False
    elif key in ("st", "dr"):
        street = _street_or_title(text, match.start(), match.end())
        words = {"st": ("street", "saint"), "dr": ("drive", "doctor")}[key][0 if street else 1]
        title = not street
    elif key in _TITLES:
        words, title = _TITLES[key], True
    elif key in _WORDS:
        words, title = _WORDS[key], False
    else:
        return match.group(0)
    out = _match_case(word, words)
    if _keep_period(text, match.end(), title):
        out += "."
    elif text[match.end() : match.end() + 1].isalnum():
        out += " "
    return out


def _expand_acronym(match: re.Match[str]) -> str:
    letters = match.group(0).replace(".", "").upper()
    return letters + ("." if _keep_period(match.string, match.end(), title=False) else "")


def expand_abbreviations(text: str) -> str:
    for pattern, words in _DOTTED:
        text = pattern.sub(lambda m, w=words: _match_case(m.group(0), w), text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _DOTTED_ACRONYM.sub(_expand_acronym, text)
    return _ABBREVIATION.sub(_expand_abbreviation, text)


# ---------------------------------------------------------------- numbers

# A numeral: comma-grouped thousands or plain digits, optional decimals.
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
# A minus sign is a hyphen glued to a number with no word before it ("-5", "(-2.5)").
_MINUS = re.compile(r"(?<![\w)\]])-(?=[$£€¥]?\.?\d)")

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", None, None),
}
_SCALE = r"(?:\s?(thousand|million|billion|trillion)\b)?"
_MONEY_PREFIX = re.compile(rf"([$£€¥])\s?({_NUM}){_SCALE}", re.IGNORECASE)
_MONEY_SUFFIX = re.compile(rf"(?<![\d.,])({_NUM}){_SCALE}\s?([$£€¥¢])", re.IGNORECASE)


def _money(amount: str, symbol: str, scale: str | None) -> str:
    if symbol == "¢":
        return f"{number_to_words(amount)} {'cent' if amount == '1' else 'cents'}"
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    if scale:
        return f"{number_to_words(amount)} {scale.lower()} {many}"
    integer, _, decimals = amount.replace(",", "").partition(".")
    if decimals and (len(decimals) > 2 or sub_one is None):
        return f"{number_to_words(amount)} {many}"
    units = int(integer)
    cents = int(decimals.ljust(2, "0")) if decimals else 0
    parts = []
    if units or not cents:
        parts.append(f"{number_to_words(integer)} {one if units == 1 else many}")
    if cents:
        parts.append(f"{cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return ", ".join(parts)


_AMPM = r"(?:\s?([ap])\.?\s?m\b\.?)"
_CLOCK = re.compile(rf"\b(\d{{1,2}}):(\d{{2}})(?::(\d{{2}}))?(?!\d){_AMPM}?", re.IGNORECASE)
_HOUR_AMPM = re.compile(rf"\b(\d{{1,2}}){_AMPM}", re.IGNORECASE)


def _ampm_suffix(match: re.Match[str], letter: str | None) -> str:
    if not letter:
        return ""
    # The period of "p.m." may also be the full stop of the sentence.
    stop = match.group(0).endswith(".") and _keep_period(match.string, match.end(), title=False)
    return f" {letter.upper()}M" + ("." if stop else "")


def _clock(match: re.Match[str]) -> str:
    hours, minutes, seconds, letter = match.groups()
    h, m = int(hours), int(minutes)
    if h > 24 or m > 59 or (seconds and int(seconds) > 59) or (letter and not 1 <= h <= 12):
        return match.group(0)
    if m == 0:
        words = cardinal(h) + ("" if letter else " o'clock" if h <= 12 else " hundred")
    else:
        words = f"{cardinal(h)} {'oh ' + cardinal(m) if m < 10 else cardinal(m)}"
    if seconds and int(seconds):
        words += f" and {cardinal(int(seconds))} {'second' if int(seconds) == 1 else 'seconds'}"
    return words + _ampm_suffix(match, letter)


def _hour_ampm(match: re.Match[str]) -> str:
    h = int(match.group(1))
    if not 1 <= h <= 12:
        return match.group(0)
    return cardinal(h) + _ampm_suffix(match, match.group(2))


_PERCENT = re.compile(rf"({_NUM})\s?%")
_ORDINAL = re.compile(r"\b(\d{1,3}(?:,\d{3})+|\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_YEAR = r"(?:1[1-9]\d\d|20\d\d)"
_YEAR_RANGE = re.compile(rf"(?<![\w.,])({_YEAR})-({_YEAR}|\d\d)(?![\w%]|[.,]\d)")
# Phone numbers are read digit by digit, in their groups: "555-1234", "(555) 123-4567".
_PHONE = re.compile(r"(?<![\w-])(?:\(?(\d{3})\)?[\s-]?)?(\d{3})-(\d{4})(?![\w-])")
_YEAR_ONLY = re.compile(rf"(?<![\w.,])({_YEAR})(s)?(?![\w%]|[.,]\d)")
_SHORT_DECADE = re.compile(r"(?<!\w)'([1-9]0)s\b")
# Single digits only: "1/15" is more often a date than a fifteenth.
_FRACTION = re.compile(r"(?<![\d/.,])(\d)/(\d)(?![\d/]|[.,]\d)")
_LEADING_POINT = re.compile(r"(?<![\w.])\.\d+")
_ANY_NUMBER = re.compile(_NUM)


def _year(match: re.Match[str]) -> str:
    words = year(int(match.group(1)))
    return plural_from_words(words) if match.group(2) else words


def _year_range(match: re.Match[str]) -> str:
    first, second = match.groups()
    if len(second) == 2:  # "1990-95": the century is implied
        end = f"oh {cardinal(int(second))}" if second.startswith("0") else cardinal(int(second))
    else:
        end = year(int(second))
    return f"{year(int(first))} to {end}"


def _phone(match: re.Match[str]) -> str:
    return ", ".join(digits_to_words(g) for g in match.groups() if g)


def _fraction(match: re.Match[str]) -> str:
    num, den = int(match.group(1)), int(match.group(2))
    if not 0 < num < den or den < 2:
        return match.group(0)
    name = {2: "half", 4: "quarter"}.get(den) or ordinal(den)
    if num > 1:
        name = "halves" if den == 2 else name + "s"
    return f"{cardinal(num)} {name}"


def _padded(match: re.Match[str], words: str) -> str:
    """Keep spoken numbers apart from letters they were glued to ("3D" -> "three D")."""
    text, start, end = match.string, match.start(), match.end()
    before = " " if start > 0 and text[start - 1].isalnum() else ""
    after = " " if end < len(text) and text[end].isalnum() else ""
    return before + words + after


def expand_numbers(text: str) -> str:
    text = _MINUS.sub("minus ", text)
    text = _MONEY_PREFIX.sub(lambda m: _money(m.group(2), m.group(1), m.group(3)), text)
    text = _MONEY_SUFFIX.sub(lambda m: _money(m.group(1), m.group(3), m.group(2)), text)
    text = _PHONE.sub(_phone, text)
    text = _CLOCK.sub(_clock, text)
    text = _HOUR_AMPM.sub(_hour_ampm, text)
    text = _PERCENT.sub(lambda m: f"{number_to_words(m.group(1))} percent", text)
    text = _ORDINAL.sub(lambda m: _padded(m, ordinal(int(m.group(1).replace(",", "")))), text)
    text = _YEAR_RANGE.sub(_year_range, text)
    text = _YEAR_ONLY.sub(_year, text)
    text = _SHORT_DECADE.sub(lambda m: plural_from_words(cardinal(int(m.group(1)))), text)
    text = _FRACTION.sub(_fraction, text)
    text = _LEADING_POINT.sub(lambda m: number_to_words(m.group(0)), text)
    return _ANY_NUMBER.sub(lambda m: _padded(m, number_to_words(m.group(0))), text)


# ---------------------------------------------------------------- symbols

_SYMBOLS = [
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"\s*@\s*"), " at "),
    (re.compile(r"\s*\+\s*"), " plus "),
    (re.compile(r"\s+=\s+"), " equals "),
    (re.compile(r"\s?°\s?C\b"), " degrees Celsius"),
    (re.compile(r"\s?°\s?F\b"), " degrees Fahrenheit"),
    (re.compile(r"\s?°"), " degrees"),
    (re.compile(r"\s?%"), " percent"),
]


def expand_symbols(text: str) -> str:
    for pattern, words in _SYMBOLS:
        text = pattern.sub(words, text)
    return text


def normalize_text(text: str) -> str:
    """Normalize English text into the words a speaker would say.

    >>> normalize_text("Dr. Smith paid $3.50 on Jan. 5th, 1984 at 3:30 pm.")
    'Doctor Smith paid three dollars, fifty cents on January fifth, nineteen eighty-four at three thirty PM.'
    """
    text = clean_text(text)
    text = expand_abbreviations(text)
    text = expand_numbers(text)
    text = expand_symbols(text)
    return clean_text(text)


__all__ = ["clean_text", "expand_abbreviations", "expand_numbers", "expand_symbols", "normalize_text"]
