"""Text front end: English normalization, espeak-ng phonemization and the symbol table."""

from voxtrain.text.normalize import clean_text, normalize_text
from voxtrain.text.phonemize import Phonemizer
from voxtrain.text.processor import ProcessedText, TextProcessor
from voxtrain.text.symbols import SymbolTable

__all__ = ["Phonemizer", "ProcessedText", "SymbolTable", "TextProcessor", "clean_text", "normalize_text"]
