#!/usr/bin/env python3
"""Tokenize text into token shards for mamba-train.

Reads documents from text files (a whole file is one document, or each line
is one with --lines) and JSONL files (*.jsonl, *.ndjson: one JSON object per
line, the document in its "text" field or the one --text-field names),
tokenizes them with a Hugging Face tokenizer.json, appends the EOS id after
every document, and packs the documents into HDF5 shards of about
--shard-tokens tokens each: OUT_DIR/PREFIX_00000.h5, PREFIX_00001.h5, ...
The shard format is docs/data-format.md: /tokens (uint16 when the vocabulary
fits, else uint32), /doc_offsets, and the root attributes format_version,
vocab_size, eos_id and tokenizer ("sha256:" and the hash of tokenizer.json).

A document is never split across two shards unless it alone is longer than
--shard-tokens; then it fills whole shards and each piece is recorded as a
document start (the format requires every shard to start one). Empty
documents are skipped. Each shard is written to NAME.tmp, fsync'ed and
renamed, so a crash never leaves a partial shard under its final name.
Shards of the same prefix already in OUT_DIR stop the run (they would mix
with the new ones) unless --overwrite deletes them first.

Exit status: 0 on success, 2 for bad input or arguments (the message names
the file, and the line for JSONL), 1 when a package is missing or writing a
shard fails.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile

# A missing package is reported after argument parsing, so that --help works
# without the dependencies.
try:
    import h5py
    import numpy as np
    from tokenizers import Tokenizer
    from tqdm import tqdm
except ImportError as e:
    MISSING_DEPENDENCY = e
else:
    MISSING_DEPENDENCY = None

FORMAT_VERSION = 1
# Tried in order when --eos-token is not given.
DEFAULT_EOS_TOKENS = ("</s>", "<|endoftext|>", "<eos>")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Documents are tokenized in batches of about this much text: large enough for
# encode_batch to keep every core busy, small enough to bound memory.
BATCH_DOCS = 1024
BATCH_BYTES = 16 << 20


class InputError(Exception):
    """Bad input or arguments: reported as one line, exit status 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  %(prog)s --tokenizer tok/tokenizer.json --out-dir data/train corpus/*.jsonl",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text files (one document each, or one per line with --lines) and JSONL files "
                        "(*.jsonl, *.ndjson: one JSON object per line)")
    p.add_argument("--tokenizer", required=True, metavar="PATH",
                   help="a Hugging Face tokenizer.json")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="where the shards go (made if missing)")
    p.add_argument("--prefix", default="shard",
                   help="shard file names are PREFIX_00000.h5, PREFIX_00001.h5, ... (default: %(default)s)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, metavar="N",
                   help="target tokens per shard (default: %(default)s)")
    p.add_argument("--eos-token", metavar="TOKEN",
                   help="the end-of-document token, appended after every document "
                        f"(default: the first of {', '.join(DEFAULT_EOS_TOKENS)} the tokenizer knows)")
    p.add_argument("--lines", action="store_true",
                   help="each line of a text file is a document (blank lines are skipped)")
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="the JSONL field holding the document text (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=1 << 20, metavar="N",
                   help="HDF5 chunk size of /tokens in tokens; 0 writes it contiguous (default: %(default)s)")
    p.add_argument("--compress", action="store_true",
                   help="gzip-compress /tokens (needs --chunk > 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the shards of this prefix already in --out-dir first (default: refuse to run)")
    args = p.parse_args(argv)
    if args.shard_tokens < 1:
        p.error("--shard-tokens must be at least 1")
    if args.chunk < 0:
        p.error("--chunk must not be negative")
    if args.compress and args.chunk == 0:
        p.error("--compress needs a chunked dataset (--chunk > 0)")
    return args


def load_tokenizer(path):
    """The tokenizer and its identity, "sha256:<hex>" of the file's bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"tokenizer {path}: {e.strerror}") from None
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # the library raises plain Exception on a bad file
        raise InputError(f"tokenizer {path}: not a valid tokenizer.json ({e})") from None
    return tokenizer, "sha256:" + hashlib.sha256(data).hexdigest()


def find_eos_id(tokenizer, tokenizer_path, eos_token):
    if eos_token is not None:
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise InputError(f"tokenizer {tokenizer_path}: EOS token {eos_token!r} is not in its vocabulary")
        return eos_id
    for token in DEFAULT_EOS_TOKENS:
        eos_id = tokenizer.token_to_id(token)
        if eos_id is not None:
            return eos_id
    raise InputError(f"tokenizer {tokenizer_path}: has none of {', '.join(DEFAULT_EOS_TOKENS)}; "
                     "name its end-of-document token with --eos-token")


def shard_path(out_dir, prefix, index):
    return os.path.join(out_dir, f"{prefix}_{index:05d}.h5")


def prepare_out_dir(out_dir, prefix, overwrite):
    """Makes out_dir, checks that it is writable, and deals with old shards:
    stale ones left beside new ones would be read as part of the data set."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"out dir {out_dir}: cannot create it: {e.strerror}") from None
    # A probe file rather than os.access, which says yes to root on a
    # read-only file system or a directory mode denies.
    try:
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        raise InputError(f"out dir {out_dir}: not writable: {e.strerror}") from None
    shard_name = re.compile(re.escape(prefix) + r"_\d{5,}\.h5(\.tmp)?")
    old = sorted(n for n in os.listdir(out_dir) if shard_name.fullmatch(n))
    if old and not overwrite:
        raise InputError(f"out dir {out_dir}: already holds {len(old)} shard file(s) named {prefix}_*.h5 "
                         f"(e.g. {old[0]}); pass --overwrite to replace them, or choose another --prefix")
    for name in old:
        os.remove(os.path.join(out_dir, name))


def check_inputs(paths):
    """Fails before any work when an input is missing or unreadable."""
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"input {path}: no such file")
        if not os.access(path, os.R_OK):
            raise InputError(f"input {path}: not readable")


def read_documents(path, lines, text_field, progress):
    """Yields the non-empty documents of one input file, advancing the
    progress bar by the bytes read."""
    is_jsonl = path.lower().endswith(JSONL_SUFFIXES)
    with open(path, "rb") as f:
        if not is_jsonl and not lines:
            data = f.read()
            progress.update(len(data))
            text = decode(data, path, None)
            if text.strip():
                yield text
            return
        for line_no, raw in enumerate(f, start=1):
            progress.update(len(raw))
            if is_jsonl:
                text = jsonl_text(raw, path, line_no, text_field)
            else:
                text = decode(raw, path, line_no).rstrip("\r\n")
            if text.strip():
                yield text


def decode(data, path, line_no):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"{path}:{line_no}" if line_no else path
        raise InputError(f"input {where}: not UTF-8 text (byte {e.start})") from None


def jsonl_text(raw, path, line_no, text_field):
    if not raw.strip():
        return ""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"input {path}:{line_no}: bad JSON line: {e.msg} at column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"input {path}:{line_no}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(obj, dict):
        raise InputError(f"input {path}:{line_no}: a JSON object expected, got {type(obj).__name__}")
    if text_field not in obj:
        raise InputError(f"input {path}:{line_no}: no field {text_field!r} (fields: {', '.join(obj) or 'none'})")
    text = obj[text_field]
    if not isinstance(text, str):
        raise InputError(f"input {path}:{line_no}: field {text_field!r} is a {type(text).__name__}, not a string")
    return text


def batches(paths, lines, text_field, progress):
    """Groups the documents of all inputs into lists for encode_batch."""
    batch, batch_bytes = [], 0
    for path in paths:
        for text in read_documents(path, lines, text_field, progress):
            batch.append(text)
            batch_bytes += len(text)
            if len(batch) >= BATCH_DOCS or batch_bytes >= BATCH_BYTES:
                yield batch
                batch, batch_bytes = [], 0
    if batch:
        yield batch


class ShardWriter:
    """Packs documents into shards and writes each when it is full."""

    def __init__(self, args, vocab_size, eos_id, tokenizer_id):
        self.out_dir, self.prefix = args.out_dir, args.prefix
        self.shard_tokens, self.chunk, self.compress = args.shard_tokens, args.chunk, args.compress
        self.vocab_size, self.eos_id, self.tokenizer_id = vocab_size, eos_id, tokenizer_id
        self.dtype = np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")
        self.pieces, self.doc_offsets, self.n_tokens = [], [], 0
        self.documents, self.shards_written, self.tokens_written = 0, 0, 0

    def add_document(self, ids):
        """ids: the document's token ids, EOS included."""
        doc = np.asarray(ids, dtype=self.dtype)
        self.documents += 1
        if self.n_tokens and self.n_tokens + len(doc) > self.shard_tokens:
            self.flush()
        # Only a document longer than a whole shard is split: it fills shards
        # of exactly shard_tokens, and its tail starts the next shard.
        while len(doc) > self.shard_tokens:
            self.append(doc[:self.shard_tokens])
            self.flush()
            doc = doc[self.shard_tokens:]
        self.append(doc)

    def append(self, tokens):
        self.doc_offsets.append(self.n_tokens)
        self.pieces.append(tokens)
        self.n_tokens += len(tokens)

    def flush(self):
        """Writes the pending documents as the next shard, atomically."""
        if not self.n_tokens:
            return
        path = shard_path(self.out_dir, self.prefix, self.shards_written)
        tmp = path + ".tmp"
        tokens = np.concatenate(self.pieces)
        try:
            with h5py.File(tmp, "w") as f:
                options = {}
                if self.chunk:
                    options["chunks"] = (min(self.chunk, len(tokens)),)
                    if self.compress:
                        options["compression"] = "gzip"
                f.create_dataset("tokens", data=tokens, **options)
                f.create_dataset("doc_offsets", data=np.asarray(self.doc_offsets, dtype="<u8"))
                f.attrs["format_version"] = np.int64(FORMAT_VERSION)
                f.attrs["vocab_size"] = np.int64(self.vocab_size)
                f.attrs["eos_id"] = np.int64(self.eos_id)
                # A fixed-length ASCII string, as the C writer makes: the C
                # reader cannot convert h5py's default (variable-length UTF-8).
                f.attrs["tokenizer"] = np.bytes_(self.tokenizer_id.encode("ascii"))
            fsync_path(tmp)
            os.replace(tmp, path)
            fsync_path(self.out_dir)  # makes the rename itself durable
        except OSError as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise OSError(f"writing {path}: {e}") from None
        self.shards_written += 1
        self.tokens_written += len(tokens)
        self.pieces, self.doc_offsets, self.n_tokens = [], [], 0


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(args):
    check_inputs(args.inputs)
    tokenizer, tokenizer_id = load_tokenizer(args.tokenizer)
    eos_id = find_eos_id(tokenizer, args.tokenizer, args.eos_token)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    prepare_out_dir(args.out_dir, args.prefix, args.overwrite)

    writer = ShardWriter(args, vocab_size, eos_id, tokenizer_id)
    total_bytes = sum(os.path.getsize(p) for p in args.inputs)
    # disable=None: a bar on a terminal only, so logs and pipes stay clean.
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=None) as progress:
        for batch in batches(args.inputs, args.lines, args.text_field, progress):
            # EOS is appended here, not by the tokenizer's post-processor
            # (add_special_tokens=False), so every document ends in exactly one.
            for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
                writer.add_document(encoding.ids + [eos_id])
    writer.flush()
    if not writer.shards_written:
        raise InputError("the inputs hold no non-empty document")
    print(f"prepare_data: wrote {writer.shards_written} shard(s), {writer.documents} document(s), "
          f"{writer.tokens_written} tokens to {args.out_dir} (vocab_size {vocab_size}, eos_id {eos_id})")


def main(argv=None):
    args = parse_args(argv)
    if MISSING_DEPENDENCY:
        print(f"prepare_data: error: {MISSING_DEPENDENCY}; install the dependencies with: "
              "pip install -r tools/requirements.txt", file=sys.stderr)
        return 1
    try:
        run(args)
    except InputError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
