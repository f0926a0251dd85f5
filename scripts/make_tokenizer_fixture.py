#!/usr/bin/env python3
"""Make the fixture that proves pglm's GPT-2 tokenizer encodes exactly like Hugging Face `tokenizers`.

Trains a small GPT-2-style byte-level BPE with `tokenizers` (ByteLevel pre-tokenizer, GPT-2 regex,
add_prefix_space=False, the full 256-byte initial alphabet, special token <|endoftext|>) on a generated
corpus, saves its vocab.json + merges.txt, reloads them with BPE.from_file, and records the ids that
library gives for ~200 test strings. The Rust test crates/model/tests/tokenizer_hf.rs loads the same
files through pglm's GPT-2 loader and must give the same ids. CI does not run this script: the output
is committed.

Usage: python scripts/make_tokenizer_fixture.py [OUT_DIR]
(default OUT_DIR: crates/model/tests/fixtures/tokenizer next to this script's repository root).
Needs `pip install tokenizers` (written against 0.23).
"""

import json
import random
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 800
MIN_FREQUENCY = 2
SPECIAL = "<|endoftext|>"
SEED = 20240601


def generated_corpus(rng: random.Random, n_lines: int) -> str:
    """Pseudo-text covering what the test strings use: words, contractions, digits, accents, CJK, emoji."""
    words = (
        "the of and to in is was for on that with as by at from it he she they we you this which "
        "policy gradient reward model token sample train learn value advantage baseline entropy "
        "café naïve résumé über straße año niño façade déjà vu"
    ).split()
    foreign = ["東京", "学习", "数据", "데이터", "мир", "привет", "ελλάδα", "مرحبا", "שלום", "नमस्ते"]
    emoji = ["🙂", "🚀", "👍🏽", "🇫🇷", "👨‍👩‍👧"]
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(rng.randint(3, 14)):
            r = rng.random()
            if r < 0.75:
                w = rng.choice(words)
                parts.append(w.capitalize() if rng.random() < 0.1 else w)
            elif r < 0.83:
                parts.append(str(rng.randint(0, 99999)))
            elif r < 0.9:
                parts.append(rng.choice(foreign))
            elif r < 0.94:
                parts.append(rng.choice(["it's", "don't", "we're", "I've", "I'm", "you'll", "he'd"]))
            elif r < 0.97:
                parts.append(rng.choice(emoji))
            else:
                parts.append(rng.choice(["--", "...", "(x)", "[1]", "#", "$5", "a+b=c"]))
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        line = sep.join(parts) + rng.choice([".", "!", "?", ",", ""])
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_strings(rng: random.Random) -> list:
    fixed = [
        "",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "a",
        "Hello world",
        "Hello, world!",
        "hello   world",
        "hello \n world",
        "trailing space ",
        "trailing spaces   ",
        "trailing newline\n",
        "trailing mixed \t\n ",
        "   leading spaces",
        "\tleading tab",
        "\n\nleading newlines",
        "tabs\tand\t\ttabs",
        "line one\nline two\r\nline three",
        "it's",
        "It's",
        "it 's",
        "don't won't can't",
        "we're they've I'm you'll he'd",
        "'s't're've'm'll'd",
        "'S 'T 'RE",
        "rock'n'roll",
        "quotes 'single' and \"double\"",
        "12345",
        "3.14159",
        "1,000,000",
        "phone: 555-1234",
        "v2.0.1-beta",
        "a1b2c3",
        "x = 42 + y",
        "Ⅻ and ² and ½ and ٣",
        "café",
        "naïve résumé",
        "Straße über",
        "e\u0301 (combining acute)",
        "東京",
        "我爱学习和数据",
        "日本語のテキスト",
        "한국어 데이터",
        "Привет, мир!",
        "Ελληνικά",
        "مرحبا بالعالم",
        "שלום עולם",
        "नमस्ते दुनिया",
        "🙂",
        "🚀🚀🚀",
        "thumbs 👍🏽 up",
        "family 👨‍👩‍👧 emoji",
        "flag 🇫🇷",
        "mixed 東京🙂café 123",
        "no\u00a0break\u00a0space",
        "ideographic\u3000space",
        "em\u2003space",
        "zero\u200bwidth",
        "line\u2028separator",
        "vertical\x0btab and form\x0cfeed",
        "nul\x00byte",
        "del\x7fchar",
        "unit\x1fseparator",
        "NEL\u0085char",
        "<|endoftext|>",
        "<html><body>Hi</body></html>",
        "def f(x):\n    return x * 2\n",
        "    indented\n        more\n",
        "!!!???...",
        "a--b__c",
        "$$$ 100%",
        "email@example.com",
        "https://example.com/path?q=1&r=2",
        "C:\\Windows\\path",
        "😀😃😄😁😆😅😂🤣",
        "ａｂｃ fullwidth",
        "x" * 60,
        " " * 20 + "x",
        "a" + "\n" * 5 + "b",
        "word " * 10,
    ]
    # Random strings from a pool of tricky pieces.
    pool = (
        list("abcdefgXYZ0123456789 '.,!?-\n\t")
        + ["  ", "   ", " \n", "\n ", "'s", "'ll", "'t", "é", "ü", "ß", "東", "京", "한", "мир"]
        + ["🙂", "👍🏽", "\u00a0", "\u3000", "½", "²", "٣", "e\u0301", "\r\n", "…", "—", "€", "¥"]
    )
    randoms = []
    while len(fixed) + len(randoms) < 200:
        n = rng.randint(1, 25)
        randoms.append("".join(rng.choice(pool) for _ in range(n)))
    return fixed + randoms


def build_tokenizer(model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "crates/model/tests/fixtures/tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)

    corpus = generated_corpus(rng, 800)
    (out / "corpus.txt").write_text(corpus, encoding="utf-8")

    tok = build_tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=MIN_FREQUENCY,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One sequence: pglm's trainer pre-tokenizes each text on its own, the same as HF per sequence.
    tok.train_from_iterator([corpus], trainer=trainer)
    tok.model.save(str(out))

    # Encode with the tokenizer rebuilt from the saved files: that is what the Rust test loads.
    hf = build_tokenizer(models.BPE.from_file(str(out / "vocab.json"), str(out / "merges.txt")))
    cases = []
    for text in test_strings(rng):
        ids = hf.encode(text).ids
        decoded = hf.decode(ids)
        assert decoded == text, (text, decoded)
        cases.append({"text": text, "ids": ids})

    fixture = {
        "tokenizers_version": __import__("tokenizers").__version__,
        "train": {"vocab_size": VOCAB_SIZE, "min_frequency": MIN_FREQUENCY, "special_tokens": [SPECIAL]},
        "cases": cases,
    }
    # One case a line: small, and diffs stay readable.
    head = json.dumps({k: v for k, v in fixture.items() if k != "cases"}, ensure_ascii=False)
    lines = [json.dumps(c, ensure_ascii=False) for c in cases]
    with open(out / "cases.json", "w", encoding="utf-8") as f:
        f.write(head[:-1] + ', "cases": [\n' + ",\n".join(lines) + "\n]}\n")
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(f"wrote {len(cases)} cases to {out}: {sizes}")


if __name__ == "__main__":
    main()
