"""Proving the torch-free tokenizer (``tokenizer.py``'s :func:`load_tokenizer`) against transformers'.

Before a model's tokenizer.json is served through ``tokenizers`` alone, its ids are held to those of
the tokenizer sentence-transformers would use (``AutoTokenizer.from_pretrained`` with the
Transformer module's tokenizer arguments and ``do_lower_case``) on :data:`SAMPLE`, a fixed set of
awkward texts: with and without special tokens, with token offsets and the special-token mask, plus
the pad id, the vocabulary size and whether token_type_ids are taken. For a reranker it also holds
the pairs of :data:`PAIRS`, as serving assembles them from its pair template (``rerank.py``), to
transformers' encoding of each pair (ids, and type ids when the model takes them). transformers is imported only
in a child process (this module, ``python -m embedder.model.tokenizer_proof``), never in the
Gunicorn master (it may import torch).

The verdict is recorded in the cache directory, ``tokenizer-proofs/<key>.json``, the key a hash of
the tokenizer's files, the Transformer module's tokenizer settings, the sample (and whether pairs
were proven), this code and the versions of tokenizers, transformers and sentence-transformers, so
the child runs once per model.
A match serves the files' tokenizer; a difference (the first differing text is named) raises
NotReplicated, and the model is loaded with sentence-transformers instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import NotReplicated
from .rerank import pair_template
from .tokenizer import TOKENIZER_ARGS, TokenizerSetup

log = logging.getLogger("embedder.model")

#: This module as ``python -m`` runs it: the child that writes transformers' side of the proof.
CLI_MODULE = "embedder.model.tokenizer_proof"
#: Bump when the proof's rules change, so old verdicts are not reused. 2: pairs, for rerankers.
PROOF_VERSION = 2
#: The proofs' folder in the cache directory.
PROOF_DIR = "tokenizer-proofs"
#: The files that decide the tokenizer transformers builds (config.json: its class by model type).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "config.json")
#: The packages whose versions decide either side's ids.
PACKAGES = ("tokenizers", "transformers", "sentence-transformers")
#: The Transformer module's settings that change the tokenizer.
TRANSFORMER_KEYS = ("processor_kwargs", "tokenizer_args", "do_lower_case", "tokenizer_name_or_path")
CHILD_TIMEOUT_S = 300

#: The texts both tokenizers must agree on: plain, long (over any model's limit), CJK and other
#: scripts, emoji (sequences, skin tones), markup and code, accents (composed and decomposed), spaces
#: leading, trailing, repeated and unusual, control and zero-width characters, numbers, special
#: tokens' strings, a word longer than WordPiece's 100 characters, empty and blank texts.
SAMPLE = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog. " * 150,
    " ".join(f"word{i} ünïcode 東京 🍕" for i in range(400)),
    "東京は日本の首都です。 我喜欢学习新的语言。 한국어 텍스트입니다.",
    "Привет, мир! مرحبا بالعالم नमस्ते दुनिया สวัสดีชาวโลก Γειά σου Κόσμε",
    "I love pizza 🍕 and coffee ☕ 👨‍👩‍👧‍👦 👍🏽 🇯🇵 ❤️",
    "<p>Hello <b>world</b> &amp; friends</p> <div class=\"x\">[link](https://example.com/a?b=c&d=e)</div>",
    "def f(x):\n    return x ** 2  # squared\n\tprint(f'{x!r}')",
    "Ça va très bien, Zürich café crème brûlée, naïve façade",
    "cafe\u0301 e\u0301le\u0300ve A\u030a ﬁ ℌ ① Ｆｕｌｌ ｗｉｄｔｈ",
    "   leading and trailing spaces   ",
    "many    spaces\tand\t\ttabs\n\nand\r\nnewlines  \n  ",
    "zero\u200bwidth\u00a0no-break\u2009thin\u3000ideographic \u200d\u2060 soft\u00adhyphen \x07\x00bell",
    "3.14159 1,000,000 2024-01-01 12:30 ½ ² 10% $3.50 €4 +1-555-0100 0x1F 1e-9",
    "don't I'll we've HeLLo WORLD McDonald's O'Neil (really?) !!! ... --- ___",
    "[CLS] [SEP] [PAD] [MASK] [UNK] <s> </s> <pad> <unk> <mask> <|endoftext|> <|im_start|> [sep] <S>",
    "x" * 150,
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "short",
    "",
    " ",
    "\t\n",
]
#: (query, document) pairs a reranker's tokenizer must encode as transformers does: plain, scripts
#: and emoji, markup, spaces, special tokens' strings, a long document, a blank one.
PAIRS = [(SAMPLE[0], SAMPLE[3]), (SAMPLE[5], SAMPLE[6]), (SAMPLE[15], SAMPLE[9]), (SAMPLE[10], SAMPLE[4]),
         (SAMPLE[18], SAMPLE[1]), (SAMPLE[14], SAMPLE[20]), (SAMPLE[12], SAMPLE[7])]


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def _transformer_settings(transformer_config: dict) -> dict:
    """The Transformer module's settings that change the tokenizer (unset and false alike left out)."""
    return {key: transformer_config[key] for key in TRANSFORMER_KEYS if transformer_config.get(key)}


def proof_key(tokenizer_dir: Path, transformer_config: dict, pairs: bool = False) -> str:
    """The proof's cache key: the tokenizer's files (by content), the Transformer module's tokenizer
    settings, the sample (with :data:`PAIRS` when ``pairs``) and the code on both sides, and the
    packages' versions."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("proof", json.dumps({"version": PROOF_VERSION, "packages": _versions(), "sample": SAMPLE,
                             "pairs": PAIRS if pairs else None,
                             "transformer": _transformer_settings(transformer_config)},
                            sort_keys=True).encode())
    here = Path(__file__).resolve().parent
    for code in ("tokenizer.py", "tokenizer_proof.py") + (("rerank.py",) if pairs else ()):
        add(code, (here / code).read_bytes())
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir) / name
        add(name, path.read_bytes() if path.is_file() else b"\0absent")
    return digest.hexdigest()


def _encodings(encode) -> list[dict]:
    """Each sample text's ``(ids, special mask, offsets)`` with special tokens and its ids without,
    from ``encode(text, add_special_tokens)`` -> (ids, special mask, offsets)."""
    out = []
    for text in SAMPLE:
        ids, special, offsets = encode(text, True)
        out.append({"ids": list(ids), "special": [int(s) for s in special],
                    "offsets": [list(o) for o in offsets], "content": list(encode(text, False)[0])})
    return out


def ours(setup: TokenizerSetup, pairs: bool = False) -> dict:
    """The files' tokenizer's side of the proof; with ``pairs``, each of :data:`PAIRS` as serving
    assembles it (``rerank.PairTemplate``)."""
    backend = setup.tokenizer.backend

    def encode(text: str, special: bool):
        e = backend.encode(text, add_special_tokens=special)
        return e.ids, e.special_tokens_mask, e.offsets

    out = {"pad_id": setup.pad_id, "vocab_size": setup.vocab_size,
           "uses_token_type_ids": setup.uses_token_type_ids, "texts": _encodings(encode)}
    if pairs:
        template = pair_template(setup.tokenizer)
        if template is None:
            raise NotReplicated("its tokenizer.json does not encode a pair as prefix + query + middle + "
                                "document + suffix")
        assembled = [template.assemble(*setup.tokenizer.content_ids([query, document]), type_ids=True)
                     for query, document in PAIRS]
        out["pairs"] = [{"ids": list(pair), "type_ids": pair.type_ids} for pair in assembled]
    return out


def reference(tokenizer_dir: Path, transformer_config: dict, pairs: bool = False) -> dict:
    """transformers' side, as sentence-transformers' Transformer module sets its tokenizer up (child
    process only: it imports transformers); with ``pairs``, its encoding of each of :data:`PAIRS`."""
    # transformers (which may import torch): only here, in the child process, never in the master.
    from tokenizers import normalizers
    from transformers import AutoTokenizer  # the child process only (see above)
    from transformers.utils import logging as hf_logging  # the child process only (see above)

    hf_logging.set_verbosity_error()
    args = dict(transformer_config.get("processor_kwargs") or transformer_config.get("tokenizer_args") or {})
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True, **args)
    if transformer_config.get("do_lower_case"):  # sentence-transformers' Transformer module
        current = hf.backend_tokenizer.normalizer
        parts = list(current) if isinstance(current, normalizers.Sequence) else [] if current is None else [current]
        if not any(isinstance(n, normalizers.Lowercase) for n in parts):
            hf.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *parts])

    def encode(text: str, special: bool):
        e = hf(text, add_special_tokens=special, truncation=False, verbose=False,
               return_offsets_mapping=True, return_special_tokens_mask=True)
        return e["input_ids"], e["special_tokens_mask"], e["offset_mapping"]

    out = {"pad_id": hf.pad_token_id if hf.pad_token_id is not None else 0, "vocab_size": len(hf),
           "uses_token_type_ids": "token_type_ids" in hf.model_input_names, "texts": _encodings(encode),
           "class": type(hf).__name__}
    if pairs:  # in one batch, as CrossEncoder encodes them (a lone pair with an empty text is no pair)
        encoded = hf([query for query, _ in PAIRS], [document for _, document in PAIRS], truncation=False,
                     verbose=False, return_token_type_ids=True)
        out["pairs"] = [{"ids": ids, "type_ids": types}
                        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]
    return out | {"torch_imported": "torch" in sys.modules}


def first_difference(mine: dict, theirs: dict) -> str | None:
    """The first way the two sides differ, in words; None when they agree."""
    for key in ("pad_id", "vocab_size", "uses_token_type_ids"):
        if mine[key] != theirs[key]:
            return f"{key} {mine[key]!r} here, {theirs[key]!r} in transformers"
    for text, a, b in zip(SAMPLE, mine["texts"], theirs["texts"]):
        for part, what in (("ids", "ids with special tokens"), ("content", "ids without special tokens"),
                           ("special", "special-token mask"), ("offsets", "token offsets")):
            if a[part] != b[part]:
                at = next((i for i, (x, y) in enumerate(zip(a[part], b[part])) if x != y),
                          min(len(a[part]), len(b[part])))
                return (f"{what} of {text[:80]!r} differ from token {at}: {a[part][at:at + 5]} here, "
                        f"{b[part][at:at + 5]} in transformers")
    parts = ("ids", "type_ids") if mine["uses_token_type_ids"] else ("ids",)
    for (query, document), a, b in zip(PAIRS, mine.get("pairs", []), theirs.get("pairs", [])):
        for part in parts:
            if a[part] != b[part]:
                at = next((i for i, (x, y) in enumerate(zip(a[part], b[part])) if x != y),
                          min(len(a[part]), len(b[part])))
                return (f"pair {part} of ({query[:40]!r}, {document[:40]!r}) differ from token {at}: "
                        f"{a[part][at:at + 5]} here, {b[part][at:at + 5]} in transformers")
    if "pairs" in mine and len(mine["pairs"]) != len(theirs.get("pairs", [])):
        return "transformers' side holds no pairs"
    return None


def _reference_in_child(tokenizer_dir: Path, transformer_config: dict, pairs: bool) -> dict:
    """transformers' side from a fresh Python process (transformers may import torch, which must not
    start in the Gunicorn master)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="embedder-tokenizer-proof-") as scratch:
        out = Path(scratch) / "reference.json"
        command = [sys.executable, "-m", CLI_MODULE, "--tokenizer-dir", str(tokenizer_dir),
                   "--transformer-config", json.dumps(_transformer_settings(transformer_config)), "--out", str(out)]
        command += ["--pairs"] if pairs else []
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NotReplicated(f"transformers' tokenizer did not load within {CHILD_TIMEOUT_S} s") from None
        if done.returncode != 0 or not out.is_file():
            raise NotReplicated(f"transformers' tokenizer could not be loaded to prove the files' one "
                                f"(exit {done.returncode}): {done.stderr.strip()[-1500:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def _write(path: Path, record: dict) -> None:
    """Atomically: a reader sees no record or a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def proof_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / PROOF_DIR / f"{key}.json"


def prove(setup: TokenizerSetup, tokenizer_dir: Path, transformer_config: dict, cache_dir: Path | None,
          pairs: bool = False) -> dict:
    """Hold ``setup`` to transformers' tokenizer of ``tokenizer_dir`` (and, with ``pairs``, its pair
    template: a reranker): the recorded verdict when there is one, else the child's reference now
    (recorded when ``cache_dir`` is given). Returns the record; raises NotReplicated when the two
    differ."""
    key = proof_key(tokenizer_dir, transformer_config, pairs)
    path = proof_path(cache_dir, key) if cache_dir is not None else None
    record = None
    if path is not None and path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as why:
            log.warning("tokenizer proof %s unreadable (%s); proving again", path, why)
    if record is None or record.get("key") != key:
        started = time.monotonic()
        theirs = _reference_in_child(tokenizer_dir, transformer_config, pairs)
        difference = first_difference(ours(setup, pairs), theirs)
        record = {"key": key, "match": difference is None, "difference": difference,
                  "class": setup.class_name, "transformers_class": theirs.get("class"),
                  "texts": len(SAMPLE), "pairs": len(PAIRS) if pairs else 0, "packages": _versions(),
                  "tokenizer_dir": str(tokenizer_dir),
                  "proved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "seconds": round(time.monotonic() - started, 2)}
        log.info("tokenizer of %s proven against transformers' %s in %.1f s: %s", tokenizer_dir,
                 record["transformers_class"], record["seconds"], "the same" if difference is None else difference)
        if path is not None:
            try:
                _write(path, record)
            except OSError as why:
                log.warning("tokenizer proof not recorded in %s (%s); it runs again at the next start", path, why)
    if not record["match"]:
        raise NotReplicated(f"its tokenizer.json set up as {record.get('class')} differs from transformers' "
                            f"{record.get('transformers_class')}: {record['difference']}"
                            + (f" (proof {path})" if path is not None else ""))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write transformers' side of a tokenizer proof (a child process).")
    parser.add_argument("--tokenizer-dir", required=True, type=Path)
    parser.add_argument("--transformer-config", required=True,
                        help="the Transformer module's tokenizer settings (JSON)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--pairs", action="store_true", help="also encode the proof's pairs (a reranker)")
    options = parser.parse_args(argv)
    config = json.loads(options.transformer_config)
    unknown = sorted(set(config.get("processor_kwargs") or config.get("tokenizer_args") or {}) - TOKENIZER_ARGS)
    if unknown:
        parser.error(f"tokenizer arguments {unknown} are not read here")
    options.out.write_text(json.dumps(reference(options.tokenizer_dir, config, options.pairs)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
