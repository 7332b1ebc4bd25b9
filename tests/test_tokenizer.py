#!/usr/bin/env python3
"""Tests the C tokenizer (src/text/tokenizer.c, through `mamba-data
tokenize`) against the tokenizers package: trains small byte-level BPE
tokenizers here (no downloads) in the manner of GPT-NeoX's (NFC, ByteLevel,
<|endoftext|> and <|padding|>, runs of spaces as added tokens), derives
variants of their tokenizer.json (merges as "a b" strings, GPT-2's prefix
space, Llama 3's Split regex with ignore_merges, every Split behavior, the
other normalization forms, unk_token, byte_fallback, subword affixes), and
compares the ids of many varied strings exactly with
tokenizer.encode(text, add_special_tokens=False).ids, and decoding with
tokenizer.decode(ids, skip_special_tokens=False).

    test_tokenizer.py MAMBA_DATA

Exits 77 (SKIPPED under ctest) when the tokenizers package is missing."""

import sys

try:
    import tokenizers
except ImportError:
    print(f"SKIPPED: the Python package tokenizers is missing in {sys.executable}; "
          "install it with: pip install -r tools/requirements.txt")
    sys.exit(77)

import json
import os
import random
import subprocess
import tempfile
import unittest

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

MAMBA_DATA = None  # set from the command line

# Text to train on: several scripts, digits, code, contractions and
# whitespace, so that the merges are of every kind.
CORPUS_LINES = [
    "The quick brown fox jumps over the lazy dog. It's what they'd've done, isn't it?",
    "We're sure you'll like it: they've said I'm fine, you'd see.",
    "Mamba models read tokens; state space layers scan 1234567 steps in 2024 and 3.14159 seconds.",
    "café naïve über façade résumé déjà vu São Paulo Zürich Ærøskøbing",
    "Привет, как дела? Это тест токенизатора. Ελληνικά γράμματα εδώ.",
    "日本語のテキストも少し入れます。中文文本也在这里。한국어 문장도 있습니다.",
    "Emoji: 🎉🚀👍🏽 and flags 🇫🇷🇯🇵 with family 👨‍👩‍👧‍👦 done.",
    "def f(x):\n    return x ** 2  # square\n\tif x > 0:\n\t\tprint('pos')",
    "Multiple   spaces    here\tand\ttabs\n\nand newlines\r\nwindows too.",
    "العربية نص قصير. עברית גם כן. हिन्दी पाठ यहाँ है।",
    "<html><body class=\"main\">Hello &amp; welcome!</body></html> {\"key\": [1, 2, 3]}",
    "Numbers: 0 1 22 333 4444 55555 666666 ½ ¾ ⅓ Ⅻ ٣٤٥ and 1,000,000.00 $ € £ ¥",
]

ADDED = [
    AddedToken("    ", normalized=True),  # runs of spaces, as GPT-NeoX has
    AddedToken("  ", normalized=True),
    AddedToken("<mask>", lstrip=True, special=True),
    AddedToken("<sep>", rstrip=True, special=True),
    AddedToken("[word]", single_word=True, normalized=False),
    AddedToken("Ω", normalized=True),  # NFC: the ohm sign U+2126 becomes it
]

# Pieces that random strings are made of.
PIECES = [
    "a", "Z", "the", " the", "é", "e\u0301", "ß", "日本", "語", "🎉", "👨‍👩‍👧", "\u200d", " ", "  ", "   ",
    "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u180e", "\u2028", "\u0085", "'s", "'t", "'re", "'ll", "'ve",
    "'d", "'m", "123", "4", "٣", "Ⅻ", "½", "!", "?!", "...", "<|endoftext|>", "<|padding|>", "<mask>",
    "<sep>", "[word]", "    ", "Ω", "\u2126", "ﬁ", "\u212b", "한", "\u1112\u1161\u11ab", "\x00", "\x7f",
    "x", "café", "über", "Привет", "_", "-", "\u0301", "\U0001f3fd", "\ufeff", "中文",
]

STRINGS = [
    "", " ", "  ", "   ", "    ", "     ", "         ", "\t", "\n", "\n\n\n", "\r\n", " \t \n ",
    "Hello world", "Hello world ", " Hello world", "  Hello  world  ", "hello\tworld\nnext line",
    "It's", "it's they're we've I'm you'll he'd don't", "'s't're've'm'll'd", "''s", "IT'S THEY'RE",
    "12345", "1 22 333 4444", "3.14159", "1,000,000", "a1b2c3", "٣٤٥ ½ Ⅻ ¹²³",
    "Hello, world! How are you? (fine) [ok] {yes} <no>", "...!!!???", "a.b,c;d:e", "--==++**",
    "café", "cafe\u0301", "e\u0301\u0301", "\u0301leading combining", "Å vs \u212b vs A\u030a",
    "\u2126 ohm and Ω omega", "ﬁ ligature", "한국어 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "日本語のテキスト", "中文文本在这里", "日本語 and English mixed 한국어",
    "🎉", "🎉🎉🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "emoji 🚀 in text 🎉!",
    "Привет, мир!", "Ελληνικά", "العربية", "עברית", "हिन्दी", "ไทย",
    "<|endoftext|>", "<|endoftext|><|endoftext|>", "text<|endoftext|>more", " <|endoftext|> ",
    "<|padding|>pad", "a<|endoftext|>b<|padding|>c", "<|endoftext", "endoftext|>", "<|endoftext|>\n",
    "word<mask>", "word   <mask> after", "<mask>", "   <mask>", "<sep>   next", "<sep>", "a <sep>\t\nb",
    "[word]", "a [word] b", "a[word]b", "é[word]", "[word]_x", "[word].", "x [word][word] y",
    "two  spaces", "four    spaces", "eight        spaces", "mixed \t  \n   runs",
    "trailing spaces   ", "   leading spaces", "\u00a0nbsp\u00a0", "ideographic\u3000space",
    "mongolian\u180evowel", "line\u2028separator", "next\u0085line", "zero\u200bwidth", "bom\ufeffhere",
    "control\x00nul", "del\x7fchar", "bell\x07", "\x1c\x1d\x1e\x1f", "x" * 300, "ab" * 200,
    "supercalifragilisticexpialidocious", "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2\n", "<html><body>Hi &amp; bye</body></html>",
    "{\"key\": [1, 2, 3], \"k2\": null}", "C:\\path\\to\\file.txt", "user@example.com https://x.y/z?q=1",
    "\U0010ffff", "\ue000 private use", "\U0001d54f math", "ǅ titlecase",
]


def random_strings(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


ALL_STRINGS = STRINGS + random_strings(200, 7)


def train_neox_like():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS_LINES * 20, trainer)
    tokenizer.add_tokens(ADDED)
    return tokenizer


def train_with_unk(prefix=None, suffix=None):
    """ASCII training text and no initial alphabet: other bytes need unk_token."""
    affixes = {k: v for k, v in (("continuing_subword_prefix", prefix), ("end_of_word_suffix", suffix)) if v}
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", **affixes))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<|endoftext|>"], show_progress=False,
                                  **affixes)
    tokenizer.train_from_iterator([line for line in CORPUS_LINES if line.isascii()] * 20, trainer)
    return tokenizer


def with_changes(base_json, change):
    """base_json (a str) after change(dict) edited it."""
    j = json.loads(base_json)
    change(j)
    return json.dumps(j, ensure_ascii=False)


class TokenizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.inputs = []
        for i, s in enumerate(ALL_STRINGS):
            path = os.path.join(cls.dir, f"text{i:04d}.txt")
            with open(path, "wb") as f:
                f.write(s.encode("utf-8"))
            cls.inputs.append(path)
        cls.neox_json = train_neox_like().to_str()
        cls.compared = 0

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        print(f"\n{cls.compared} encodings and decodings compared with tokenizers {tokenizers.__version__}",
              file=sys.stderr)

    def save(self, name, tokenizer_json):
        path = os.path.join(self.dir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(tokenizer_json)
        return path

    def run_cli(self, *args, check=True):
        r = subprocess.run([MAMBA_DATA, "tokenize", *args], capture_output=True)
        if check:
            self.assertEqual(r.returncode, 0, r.stderr.decode("utf-8", "replace"))
        return r

    def encode_all(self, path, special_as_text=False):
        """mamba-data's ids of every string of ALL_STRINGS, in one run."""
        args = ["--tokenizer", path] + [a for p in self.inputs for a in ("--input", p)]
        if special_as_text:
            args.append("--special-as-text")
        lines = self.run_cli(*args).stdout.decode("ascii").split("\n")
        self.assertEqual(lines[-1], "")
        self.assertEqual(len(lines) - 1, len(ALL_STRINGS))
        return [[int(x) for x in line.split()] for line in lines[:-1]]

    def decode(self, path, ids):
        out = self.run_cli("--tokenizer", path, "--decode", "--ids", ",".join(map(str, ids))).stdout
        self.assertTrue(out.endswith(b"\n"))
        return out[:-1].decode("utf-8")

    def compare_encodings(self, name, tokenizer_json, special_as_text=False):
        """Every string's ids from mamba-data against tokenizers'; returns tokenizers' ids."""
        path = self.save(name, tokenizer_json)
        reference = Tokenizer.from_str(tokenizer_json)
        reference.encode_special_tokens = special_as_text
        ours = self.encode_all(path, special_as_text)
        expected = []
        for s, got in zip(ALL_STRINGS, ours):
            want = reference.encode(s, add_special_tokens=False).ids
            self.assertEqual(got, want, f"{name}: ids of {s!r}")
            expected.append(want)
        type(self).compared += len(ALL_STRINGS)
        return path, reference, expected

    def test_neox_like_encode_and_decode(self):
        path, reference, expected = self.compare_encodings("neox", self.neox_json)
        self.assertGreater(sum(len(ids) for ids in expected), 3000)
        for s, ids in zip(STRINGS, expected):
            text = self.decode(path, ids)
            self.assertEqual(text, reference.decode(ids, skip_special_tokens=False), f"decode of {s!r}")
            # Besides NFC, only lstrip and rstrip (<mask>, <sep>) lose text.
            if "<mask>" not in s and "<sep>" not in s:
                self.assertEqual(text, normalizers.NFC().normalize_str(s))
        type(self).compared += len(STRINGS)

    def test_special_tokens_as_text(self):
        self.compare_encodings("neox", self.neox_json, special_as_text=True)

    def test_text_flag(self):
        path = self.save("neox", self.neox_json)
        reference = Tokenizer.from_str(self.neox_json)
        for s in ["Hello world", "x<|endoftext|>y  z", "café 🎉 日本"]:
            out = self.run_cli("--tokenizer", path, "--text", s).stdout.decode("ascii")
            self.assertEqual([int(x) for x in out.split()], reference.encode(s, add_special_tokens=False).ids)

    def test_merges_as_strings(self):
        def legacy(j):
            j["model"]["merges"] = [" ".join(pair) for pair in j["model"]["merges"]]
        self.compare_encodings("legacy", with_changes(self.neox_json, legacy))

    def test_gpt2_prefix_space(self):
        def gpt2(j):
            j["normalizer"] = None
            j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                  "use_regex": True}
        self.compare_encodings("gpt2", with_changes(self.neox_json, gpt2))

    def test_llama3_split_and_ignore_merges(self):
        pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                   r"|\s*[\r\n]+|\s+(?!\S)|\s+")

        def llama3(j):
            j["normalizer"] = None
            j["model"]["ignore_merges"] = True
            j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        self.compare_encodings("llama3", with_changes(self.neox_json, llama3))

    def test_split_behaviors(self):
        patterns = [{"Regex": r"\s+"}, {"Regex": r"\p{N}"}, {"Regex": r"[^\s\p{L}]+"}, {"String": " "},
                    {"String": "ab"}, {"Regex": r"(?=\p{Lu})"}, {"Regex": r"^\w"}, {"Regex": r"\w$"}]
        behaviors = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]
        for k, pattern in enumerate(patterns):
            for behavior in behaviors:
                for invert in (False, True):
                    def split(j):
                        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
                            {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": invert},
                            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                             "use_regex": False}]}
                    with self.subTest(pattern=pattern, behavior=behavior, invert=invert):
                        self.compare_encodings(f"split{k}{behavior}{invert}", with_changes(self.neox_json, split))

    def test_normalizers(self):
        forms = [{"type": "NFD"}, {"type": "NFKC"}, {"type": "NFKD"},
                 {"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "NFC"}]}, None]
        for k, form in enumerate(forms):
            with self.subTest(normalizer=form):
                self.compare_encodings(f"norm{k}", with_changes(self.neox_json, lambda j: j.update(normalizer=form)))

    def test_without_pre_tokenizer(self):
        self.compare_encodings("no-pre", with_changes(self.neox_json, lambda j: j.update(pre_tokenizer=None)))

    def test_unk_token(self):
        base = train_with_unk().to_str()
        unk_id = json.loads(base)["model"]["vocab"]["<unk>"]
        counts = []
        for fuse in (False, True):
            def unk(j):
                j["model"]["fuse_unk"] = fuse
            with self.subTest(fuse_unk=fuse):
                _, _, expected = self.compare_encodings(f"unk{fuse}", with_changes(base, unk))
                counts.append(sum(ids.count(unk_id) for ids in expected))
        self.assertGreater(counts[1], 0)
        self.assertGreater(counts[0], counts[1])  # fusing joins runs of unknown characters

    def test_byte_fallback(self):
        base = train_with_unk().to_str()
        first_byte_id = len(json.loads(base)["model"]["vocab"])

        def fallback(j):
            vocab = j["model"]["vocab"]
            for b in range(256):
                vocab[f"<0x{b:02X}>"] = len(vocab)
            j["model"]["byte_fallback"] = True
        _, _, expected = self.compare_encodings("fallback", with_changes(base, fallback))
        self.assertTrue(any(i >= first_byte_id for ids in expected for i in ids))

    def test_subword_prefix_and_suffix(self):
        for k, (prefix, suffix) in enumerate((("##", None), (None, "</w>"), ("##", "</w>"))):
            with self.subTest(prefix=prefix, suffix=suffix):
                self.compare_encodings(f"affix{k}", train_with_unk(prefix, suffix).to_str())

    def test_decode_byte_pieces(self):
        """Random id sequences: tokens that hold parts of UTF-8 characters
        decode with U+FFFD where tokenizers puts it; added tokens decode as
        their text."""
        path = self.save("neox", self.neox_json)
        reference = Tokenizer.from_str(self.neox_json)
        size = reference.get_vocab_size(with_added_tokens=True)
        rng = random.Random(3)
        cases = [[rng.randrange(size) for _ in range(rng.randint(0, 30))] for _ in range(40)]
        cases += [[rng.randrange(2, 258) for _ in range(rng.randint(1, 8))] for _ in range(20)]  # single bytes
        for ids in cases:
            self.assertEqual(self.decode(path, ids), reference.decode(ids, skip_special_tokens=False), ids)
        no_decoder = with_changes(self.neox_json, lambda j: j.update(decoder=None))
        path = self.save("no-decoder", no_decoder)
        reference = Tokenizer.from_str(no_decoder)
        for ids in cases[:10]:
            self.assertEqual(self.decode(path, ids), reference.decode(ids, skip_special_tokens=False), ids)
        type(self).compared += len(cases) + 10

    def test_vocab_and_errors(self):
        path = self.save("neox", self.neox_json)
        r = self.run_cli("--tokenizer", path, "--decode", "--ids", "0,99999", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"id 99999 (ids[1]) is not a token", r.stderr)
        r = self.run_cli("--tokenizer", path, "--decode", "--ids", "1,x", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"'x' is not a token id", r.stderr)
        bad = os.path.join(self.dir, "bad-utf8.txt")
        with open(bad, "wb") as f:
            f.write(b"ok \xe4\xb8 cut")
        r = self.run_cli("--tokenizer", path, "--input", bad, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"bad-utf8.txt: the text is not valid UTF-8 (byte 3 of 9)", r.stderr)
        missing = os.path.join(self.dir, "no-such-tokenizer.json")
        r = self.run_cli("--tokenizer", missing, "--text", "x", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(missing.encode(), r.stderr)
        wordpiece = self.save("wordpiece", with_changes(self.neox_json, lambda j: j["model"].update(type="WordPiece")))
        r = self.run_cli("--tokenizer", wordpiece, "--text", "x", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"wordpiece.json: model.type: WordPiece is not supported", r.stderr)
        r = self.run_cli("--tokenizer", path, check=False)
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: test_tokenizer.py MAMBA_DATA")
    MAMBA_DATA = sys.argv.pop(1)
    unittest.main(verbosity=2)
