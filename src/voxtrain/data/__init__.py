"""Corpus preparation and the on-disk feature store.

`prepare_corpus` turns an LJSpeech-format folder into a `FeatureStore`. The store is
importable without the text/audio stack so training workers stay light.
"""

from voxtrain.artifacts.store import FeatureStore, StoreError
from voxtrain.data.metadata import PrepareError


def __getattr__(name: str):
    # prepare pulls in torch, pyworld and espeak; load it only when asked for.
    if name in ("prepare_corpus", "PrepareReport"):
        from voxtrain.data import prepare

        return getattr(prepare, name)
    raise AttributeError(f"module 'voxtrain.data' has no attribute {name!r}")


__all__ = ["FeatureStore", "PrepareError", "PrepareReport", "StoreError", "prepare_corpus"]
