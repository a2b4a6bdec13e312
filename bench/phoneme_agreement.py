"""How often piper's phonemes differ from voxtrain's for the same text. Prints one JSON object.

    python bench/phoneme_agreement.py                   # 100 demo-corpus sentences, the demo voice
    python bench/phoneme_agreement.py --sentences 300 --checkpoint runs/x/checkpoints/best.safetensors

An exported voice is played by piper with piper's own front end: its espeak-ng (piper's bundled
espeakbridge and espeak-ng-data) on the raw text, split into sentences; voxtrain's front end
normalizes the text first (numbers, abbreviations) and runs the espeak-ng of the espeakng-loader
wheel through phonemizer. Two comparisons, over --sentences sentences of voxtrain's demo list:

  phonemes  piper's phoneme string (its sentences joined by a space) against voxtrain's, both as
            NFD code points: the share of sentences that differ at all, and the symbol error
            rate (Levenshtein edits / voxtrain's length, over all sentences)
  ids       what the model is fed: piper's phonemes through the voice's phoneme_id_map, pads
            and everything the map sends to the pad id dropped (as the graph drops them),
            against voxtrain's own ids; same two rates, in ids

`piper_only` and `voxtrain_only` count the phonemes one side has more of than the other, summed
over sentences (what the edits are made of); `unmapped` the phonemes piper emits that the voice's
phoneme_id_map lacks (piper drops them, with a warning). `examples` lists the first --examples
sentences that differ, with both phoneme strings.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "demo" / "runs" / "tiny" / "checkpoints" / "best.safetensors"


def edits(a: list, b: list) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def rates(pairs: list[tuple[list, list]]) -> dict:
    """pairs of (voxtrain, piper) sequences -> share of sentences differing, edits per voxtrain symbol."""
    distances = [edits(v, p) for v, p in pairs]
    return {"sentences_differing": round(sum(d > 0 for d in distances) / len(pairs), 4),
            "symbol_error_rate": round(sum(distances) / sum(len(v) for v, _ in pairs), 4),
            "edits": sum(distances), "symbols": sum(len(v) for v, _ in pairs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT),
                        help="the voice whose id map and text settings count")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--examples", type=int, default=8)
    args = parser.parse_args()
    if not Path(args.checkpoint).is_file():
        sys.exit(f"--checkpoint {args.checkpoint}: no such file (run `make demo`, or pass a trained voice)")

    from piper import PiperVoice
    from piper.config import PiperConfig

    from voxtrain.demo_corpus import find_piper_voice, load_sentences
    from voxtrain.inference.loader import load_acoustic_model
    from voxtrain.inference.voice_config import piper_voice_config
    from voxtrain.text import TextProcessor

    acoustic = load_acoustic_model(args.checkpoint)
    text_config, symbols = acoustic.config.text, acoustic.symbols
    piper = PiperVoice.load(find_piper_voice()[0])
    # piper's front end as it runs for the exported voice: its config's id map and vowel clusters
    # (no model is run, so no session).
    exported = PiperVoice(session=None, config=PiperConfig.from_dict(
        piper_voice_config(acoustic.config.audio, text_config, symbols, {})))
    front = TextProcessor(text_config, symbols)
    texts = load_sentences()[: args.sentences]

    phoneme_pairs, id_pairs, examples = [], [], []
    piper_only, voxtrain_only, unmapped = Counter(), Counter(), Counter()
    for text, ours in zip(texts, front.process(texts), strict=True):
        sentences = piper.phonemize(text)
        theirs = " ".join("".join(p) for p in sentences)
        v, p = list(unicodedata.normalize("NFD", ours.phonemes)), list(unicodedata.normalize("NFD", theirs))
        phoneme_pairs.append((v, p))
        piper_only.update(Counter(p) - Counter(v))
        voxtrain_only.update(Counter(v) - Counter(p))
        unmapped.update(ph for s in exported.phonemize(text) for ph in s if ph not in exported.config.phoneme_id_map)
        # The ids as the graph keeps them: what piper sends the exported voice, pads dropped.
        piper_ids = [i for s in exported.phonemize(text) for i in exported.phonemes_to_ids(s) if i != symbols.pad_id]
        ours_ids = [i for i in ours.ids if i != symbols.pad_id]
        id_pairs.append((ours_ids, piper_ids))
        if v != p and len(examples) < args.examples:
            examples.append({"text": text, "voxtrain": ours.phonemes, "piper": theirs})
    report = {
        "checkpoint": str(Path(args.checkpoint).resolve().relative_to(ROOT))
        if Path(args.checkpoint).resolve().is_relative_to(ROOT) else Path(args.checkpoint).name,
        "sentences": len(texts), "text_config": text_config.model_dump(),
        "phonemes": rates(phoneme_pairs), "ids": rates(id_pairs),
        "piper_only": dict(piper_only.most_common(10)), "voxtrain_only": dict(voxtrain_only.most_common(10)),
        "unmapped": dict(unmapped.most_common()), "examples": examples,
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
