"""English number words: cardinals, ordinals, years and digit strings.

Written for the text normalizer; American style, so there is no "and" after the
hundreds ("one hundred five"), which also matches how years are read ("two thousand five").
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion"]
# Past the largest named scale a number is an identifier rather than a quantity.
_MAX_CARDINAL_DIGITS = 3 * len(_SCALES)

_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_LAST_WORD = re.compile(r"[a-z]+$")


def _below_hundred(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(f"{_ONES[hundreds]} hundred")
    if rest or not hundreds:
        parts.append(_below_hundred(rest))
    return " ".join(parts)


def digits_to_words(digits: str) -> str:
    """Read a digit string one digit at a time: "007" -> "zero zero seven"."""
    return " ".join(_ONES[int(d)] for d in digits if d.isdigit())


def cardinal(n: int) -> str:
    """Cardinal words of an integer: 1234 -> "one thousand two hundred thirty-four"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n == 0:
        return "zero"
    if len(str(n)) > _MAX_CARDINAL_DIGITS:
        return digits_to_words(str(n))
    groups = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            words = _below_thousand(group)
            groups.append(f"{words} {_SCALES[scale]}".rstrip())
        scale += 1
    return " ".join(reversed(groups))


def ordinal_from_words(words: str) -> str:
    """Turn cardinal words into ordinal words by changing the last word only."""
    match = _LAST_WORD.search(words)
    if match is None:
        return words
    last = match.group()
    if last in _ORDINAL_IRREGULAR:
        new = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        new = last[:-1] + "ieth"
    else:
        new = last + "th"
    return words[: match.start()] + new


def ordinal(n: int) -> str:
    """Ordinal words: 22 -> "twenty-second"."""
    return ordinal_from_words(cardinal(n))


def plural_from_words(words: str) -> str:
    """Plural of the last number word, for decades: "nineteen eighty" -> "nineteen eighties"."""
    match = _LAST_WORD.search(words)
    if match is None:
        return words
    last = match.group()
    new = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last.endswith("x") else "s")
    return words[: match.start()] + new


def year(n: int) -> str:
    """Read an integer the way a year is spoken: 1984 -> "nineteen eighty-four".

    2000-2009 keep the thousand ("two thousand five"), as people say them; other
    four-digit years split into two pairs, with "oh" for a zero tens digit ("nineteen oh five").
    """
    if not 1000 <= n <= 9999:
        return cardinal(n)
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{cardinal(high)} hundred"
    if low < 10:
        return f"{cardinal(high)} oh {_ONES[low]}"
    return f"{cardinal(high)} {cardinal(low)}"


def number_to_words(text: str) -> str:
    """Words for an unsigned numeral such as "1,234.56", "0.5" or "007".

    The integer part is a cardinal unless it has a leading zero (an identifier such as
    "007") or is too long to be a quantity; decimals are read digit by digit.
    """
    integer, _, decimals = text.replace(",", "").partition(".")
    if not integer:
        words = ""
    elif (len(integer) > 1 and integer.startswith("0")) or len(integer) > _MAX_CARDINAL_DIGITS:
        words = digits_to_words(integer)
    else:
        words = cardinal(int(integer))
    if decimals:
        words = f"{words} point {digits_to_words(decimals)}".strip()
    return words
