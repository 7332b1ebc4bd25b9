#!/usr/bin/env python3
"""Tests tools/prepare_data.py end to end: trains a tiny byte-level BPE
tokenizer here (no downloads), runs the tool as a subprocess on a small
corpus of text and JSONL files, and reads the shards back with h5py against
docs/data-format.md. Exits 77 (SKIPPED under ctest) when a Python package
the tool needs is missing."""

import importlib
import sys

REQUIRED = ("tokenizers", "h5py", "numpy", "tqdm")
missing = []
for package in REQUIRED:
    try:
        importlib.import_module(package)
    except ImportError:
        missing.append(package)
if missing:
    print(f"SKIPPED: missing Python package(s) {', '.join(missing)} in {sys.executable}; "
          "install them with: pip install -r tools/requirements.txt")
    sys.exit(77)

import hashlib
import json
import os
import random
import subprocess
import tempfile
import unittest

import h5py
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "prepare_data.py")
WORDS = ("the model reads tokens from a shard and each state space layer scans the sequence "
         "while gradients flow back through every chunk of the selective scan on the device "
         "café naïve über").split()
SHARD_TOKENS = 300


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "."


def paragraph(rng, n_sentences):
    return " ".join(sentence(rng) for _ in range(n_sentences))


def train_tokenizer(path):
    # Byte-level BPE decodes back to exactly the input text, so documents
    # can be compared without any whitespace normalization.
    rng = random.Random(1)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator((sentence(rng) for _ in range(400)), trainer)
    tokenizer.save(path)
    return tokenizer


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


def read_shards(out_dir, prefix="shard"):
    """[(tokens, doc_offsets, attrs, tokens dataset's chunks and compression)] in shard order."""
    names = sorted(n for n in os.listdir(out_dir) if n.startswith(prefix + "_"))
    shards = []
    for name in names:
        with h5py.File(os.path.join(out_dir, name), "r") as f:
            tokens = f["tokens"]
            shards.append({"name": name, "tokens": tokens[()], "dtype": tokens.dtype,
                           "chunks": tokens.chunks, "compression": tokens.compression,
                           "doc_offsets": f["doc_offsets"][()], "offsets_dtype": f["doc_offsets"].dtype,
                           "attrs": dict(f.attrs)})
    return shards


class PrepareDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.tokenizer_path = os.path.join(cls.dir, "tokenizer.json")
        cls.tokenizer = train_tokenizer(cls.tokenizer_path)
        cls.eos_id = cls.tokenizer.token_to_id("</s>")

        # Two whole-file documents, then JSONL documents (one blank line and
        # one empty text, both skipped), in the order the tool reads them.
        rng = random.Random(2)
        cls.docs = []
        txt_paths = []
        for i in range(2):
            text = paragraph(rng, 3) + "\n" + paragraph(rng, 2) + "\n"
            txt_paths.append(cls.write(f"doc{i}.txt", text))
            cls.docs.append(text)
        jsonl_docs = [paragraph(rng, rng.randint(1, 4)) for _ in range(25)]
        lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(jsonl_docs)]
        lines[5:5] = ["", json.dumps({"text": ""})]
        cls.jsonl_path = cls.write("corpus.jsonl", "\n".join(lines) + "\n")
        cls.docs += jsonl_docs
        cls.inputs = txt_paths + [cls.jsonl_path]

        cls.plain_dir = os.path.join(cls.dir, "plain")
        cls.result = run_tool("--tokenizer", cls.tokenizer_path, "--out-dir", cls.plain_dir,
                              "--shard-tokens", str(SHARD_TOKENS), *cls.inputs)
        if cls.result.returncode != 0:
            raise AssertionError(f"prepare_data failed ({cls.result.returncode}): {cls.result.stderr}")
        cls.shards = read_shards(cls.plain_dir)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def decode(self, ids):
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def test_several_shards_and_no_temporaries(self):
        self.assertGreaterEqual(len(self.shards), 2)
        self.assertEqual([s["name"] for s in self.shards],
                         [f"shard_{i:05d}.h5" for i in range(len(self.shards))])
        self.assertEqual([n for n in os.listdir(self.plain_dir) if n.endswith(".tmp")], [])
        self.assertIn(f"{len(self.docs)} document(s)", self.result.stdout)

    def test_attributes_and_dtypes(self):
        with open(self.tokenizer_path, "rb") as f:
            digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        for s in self.shards:
            self.assertEqual(s["dtype"], np.dtype("uint16"))
            self.assertEqual(s["offsets_dtype"], np.dtype("uint64"))
            self.assertEqual(s["attrs"]["format_version"], 1)
            self.assertEqual(s["attrs"]["vocab_size"], self.tokenizer.get_vocab_size(with_added_tokens=True))
            self.assertEqual(s["attrs"]["eos_id"], self.eos_id)
            # Fixed-length ASCII (bytes in h5py), the string type the C reader converts.
            self.assertEqual(s["attrs"]["tokenizer"], digest.encode("ascii"))
            self.assertLess(int(s["tokens"].max()), s["attrs"]["vocab_size"])

    def test_doc_offsets_and_eos(self):
        for s in self.shards:
            tokens, offsets = s["tokens"], s["doc_offsets"].astype(np.int64)
            self.assertLessEqual(len(tokens), SHARD_TOKENS, s["name"])
            self.assertEqual(offsets[0], 0, s["name"])
            self.assertTrue(np.all(np.diff(offsets) > 0), s["name"])
            self.assertLess(offsets[-1], len(tokens), s["name"])
            # Whole documents only: each ends in EOS just before the next starts.
            self.assertTrue(np.all(tokens[offsets[1:] - 1] == self.eos_id), s["name"])
            self.assertEqual(tokens[-1], self.eos_id, s["name"])
            self.assertEqual(int(np.sum(tokens == self.eos_id)), len(offsets), s["name"])

    def test_documents_round_trip(self):
        decoded = []
        for s in self.shards:
            tokens, bounds = s["tokens"], list(s["doc_offsets"]) + [len(s["tokens"])]
            for start, end in zip(bounds[:-1], bounds[1:]):
                decoded.append(self.decode(tokens[start:end - 1]))
        self.assertEqual(len(decoded), len(self.docs))
        for i, (got, want) in enumerate(zip(decoded, self.docs)):
            self.assertEqual(got, want, f"document {i}")

    def test_chunked_compressed_reads_the_same(self):
        out_dir = os.path.join(self.dir, "gzip")
        r = run_tool("--tokenizer", self.tokenizer_path, "--out-dir", out_dir, "--shard-tokens",
                     str(SHARD_TOKENS), "--chunk", "64", "--compress", *self.inputs)
        self.assertEqual(r.returncode, 0, r.stderr)
        packed = read_shards(out_dir)
        self.assertEqual(len(packed), len(self.shards))
        for a, b in zip(self.shards, packed):
            self.assertEqual(b["chunks"], (64,))
            self.assertEqual(b["compression"], "gzip")
            np.testing.assert_array_equal(a["tokens"], b["tokens"])
            np.testing.assert_array_equal(a["doc_offsets"], b["doc_offsets"])

    def test_lines_mode(self):
        lines = ["First line document.", "", "Second one, café.", "   ", "Third."]
        path = self.write("lines.txt", "\r\n".join(lines) + "\n")
        out_dir = os.path.join(self.dir, "lines")
        r = run_tool("--tokenizer", self.tokenizer_path, "--out-dir", out_dir, "--lines", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        (shard,) = read_shards(out_dir)
        bounds = list(shard["doc_offsets"]) + [len(shard["tokens"])]
        got = [self.decode(shard["tokens"][a:b - 1]) for a, b in zip(bounds[:-1], bounds[1:])]
        self.assertEqual(got, [line for line in lines if line.strip()])

    def test_document_longer_than_a_shard_is_split(self):
        text = paragraph(random.Random(3), 30)
        path = self.write("long.jsonl", json.dumps({"body": text}) + "\n")
        out_dir = os.path.join(self.dir, "long")
        r = run_tool("--tokenizer", self.tokenizer_path, "--out-dir", out_dir, "--text-field", "body",
                     "--shard-tokens", "100", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        shards = read_shards(out_dir)
        self.assertGreater(len(shards), 2)
        self.assertTrue(all(len(s["tokens"]) == 100 for s in shards[:-1]))
        self.assertTrue(all(list(s["doc_offsets"]) == [0] for s in shards))
        tokens = np.concatenate([s["tokens"] for s in shards])
        self.assertEqual(tokens[-1], self.eos_id)
        self.assertEqual(self.decode(tokens[:-1]), text)

    def test_large_vocabulary_gives_uint32(self):
        vocab = {"<unk>": 0, "</s>": 1, **{f"w{i}": i + 2 for i in range(70_000)}}
        big = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        big.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer_path = os.path.join(self.dir, "big.json")
        big.save(tokenizer_path)
        text = "w69999 w5 w65536"
        path = self.write("big.txt", text)
        out_dir = os.path.join(self.dir, "big")
        r = run_tool("--tokenizer", tokenizer_path, "--out-dir", out_dir, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        (shard,) = read_shards(out_dir)
        self.assertEqual(shard["dtype"], np.dtype("uint32"))
        self.assertEqual(shard["attrs"]["vocab_size"], 70_002)
        self.assertEqual(list(shard["tokens"]), [70_001, 7, 65_538, 1])

    def assert_input_error(self, result, *fragments):
        self.assertEqual(result.returncode, 2, result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, result.stderr)

    def test_bad_json_line_names_file_and_line(self):
        path = self.write("bad.jsonl", '{"text": "fine"}\n{"text": "fine too"}\n{"text": "cut off\n')
        r = run_tool("--tokenizer", self.tokenizer_path, "--out-dir", os.path.join(self.dir, "bad"), path)
        self.assert_input_error(r, f"{path}:3", "bad JSON")

    def test_missing_text_field_names_file_and_line(self):
        path = self.write("nofield.jsonl", '{"text": "fine"}\n{"content": "x"}\n')
        r = run_tool("--tokenizer", self.tokenizer_path, "--out-dir", os.path.join(self.dir, "nofield"), path)
        self.assert_input_error(r, f"{path}:2", "'text'")

    def test_other_input_errors(self):
        out_dir = os.path.join(self.dir, "errors")
        missing = os.path.join(self.dir, "absent.txt")
        self.assert_input_error(run_tool("--tokenizer", self.tokenizer_path, "--out-dir", out_dir, missing),
                                missing, "no such file")
        missing_tok = os.path.join(self.dir, "absent.json")
        self.assert_input_error(run_tool("--tokenizer", missing_tok, "--out-dir", out_dir, self.jsonl_path),
                                missing_tok)
        self.assert_input_error(run_tool("--tokenizer", self.tokenizer_path, "--out-dir", out_dir,
                                         "--eos-token", "<nope>", self.jsonl_path), "'<nope>'")
        # A path below a regular file can never be a directory, even for root.
        bad_dir = os.path.join(self.jsonl_path, "out")
        self.assert_input_error(run_tool("--tokenizer", self.tokenizer_path, "--out-dir", bad_dir,
                                         self.jsonl_path), bad_dir)
        # Old shards are not silently mixed with new ones.
        self.assert_input_error(run_tool("--tokenizer", self.tokenizer_path, "--out-dir", self.plain_dir,
                                         self.jsonl_path), "--overwrite")


if __name__ == "__main__":
    unittest.main(verbosity=2)
