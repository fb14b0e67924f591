"""The distilled corpus on disk: resumable chunks, then parallel text files per label set.

While the teacher translates, chunk ``k`` (source lines ``k * chunk_lines`` up to the next
chunk) is one JSON-lines file, ``chunks/NNNNNN.jsonl``, written whole under a temporary name
and renamed (:func:`translate.runs.checkpoint.atomic_write_text`): a kill loses at most the
chunk being translated, and a restart translates exactly the chunks that are missing, so no
line is ever lost or written twice. ``manifest.json`` records what the chunks were made from
(teacher checkpoint, search settings, the sources' files); a restart with anything else is
refused rather than mixing two teachers in one corpus.

Once every chunk is there they are published as plain parallel text files, one pair per
distinct set of domain labels (``corpus/partN.{src_lang}`` / ``.{tgt_lang}``, the labels in
the manifest): the data pipeline reads them like any ``kind: text`` source, a block at a time
(so a corpus beyond RAM is never whole in memory), and every pair keeps its labels. Each
input line gives exactly one line, empty ones included (the pipeline's cleaning then drops
and counts empty pairs, as for any corpus).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from translate.errors import TranslateError
from translate.runs.checkpoint import atomic_write_text

MANIFEST = "manifest.json"
VERSION = 1

# Characters some readers treat as line breaks: inside a sentence they would shift every
# later line of a parallel file, so they become spaces in the published text.
_BREAKS = {ord(c): " " for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class DistillError(TranslateError):
    """The distilled corpus cannot be made or used as asked."""


@dataclass(frozen=True)
class Group:
    """One published pair of parallel files: the pairs that carry exactly ``domains``."""

    prefix: Path  # {prefix}.{src_lang} and {prefix}.{tgt_lang}
    domains: list[str]
    rows: int


class Store:
    """The distilled corpus' folder. Constructing it touches nothing on disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.chunks_dir = self.root / "chunks"
        self.corpus_dir = self.root / "corpus"
        self.manifest_path = self.root / MANIFEST

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DistillError(f"{self.manifest_path}: unreadable ({err}); delete the folder "
                               "to distill again") from None
        if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
            raise DistillError(f"{self.manifest_path}: not a distilled corpus of this version; "
                               "delete the folder to distill again")
        return manifest

    def begin(self, settings: dict) -> dict:
        """The manifest for a corpus made with ``settings``: the existing one when it was made
        with the same (a restart), a new one in an empty folder; any other is refused."""
        manifest = self.read_manifest()
        if manifest is not None:
            if manifest["settings"] != settings:
                changed = sorted(k for k in {*settings, *manifest["settings"]}
                                 if settings.get(k) != manifest["settings"].get(k))
                raise DistillError(
                    f"{self.root}: holds a distilled corpus made with other settings "
                    f"({', '.join(changed)} differ); delete it, or set distill.output to "
                    "another folder")
            return manifest
        if self.chunks_dir.is_dir() and any(self.chunks_dir.iterdir()):
            raise DistillError(f"{self.chunks_dir}: chunks without {MANIFEST}; delete the "
                               "folder to distill again")
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = {"version": VERSION, "settings": settings, "complete": False}
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1) + "\n")
        return manifest

    def groups(self) -> list[Group]:
        """The published corpus; an error when it is not complete."""
        manifest = self.read_manifest()
        if manifest is None or not manifest.get("complete"):
            raise DistillError(f"{self.root}: no complete distilled corpus here; run the "
                               "translate stage first (--stage translate, or no --stage)")
        return [Group(self.corpus_dir / g["name"], list(g["domains"]), int(g["rows"]))
                for g in manifest["groups"]]

    # ------------------------------------------------------------------ chunks
    def chunk_path(self, k: int) -> Path:
        return self.chunks_dir / f"{k:06d}.jsonl"

    def has_chunk(self, k: int) -> bool:
        return self.chunk_path(k).is_file()

    def write_chunk(self, k: int, src: list[str], hyp: list[str], ref: list[str],
                    domains: list[list[str]]) -> None:
        """Chunk ``k``, whole or not at all."""
        lines = [json.dumps({"src": s, "tgt": h, "ref": r, "domains": d}, ensure_ascii=False)
                 for s, h, r, d in zip(src, hyp, ref, domains, strict=True)]
        self.chunks_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.chunk_path(k), "".join(line + "\n" for line in lines))

    def read_chunk(self, k: int) -> Iterator[dict]:
        with self.chunk_path(k).open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    yield json.loads(line)
                except ValueError:
                    raise DistillError(f"{self.chunk_path(k)}: line {number}: not JSON; delete "
                                       "this chunk to translate it again") from None

    # ------------------------------------------------------------------ publishing
    def publish(self, n_chunks: int, rows: int, src_lang: str, tgt_lang: str) -> list[Group]:
        """Stream chunks ``0..n_chunks-1`` into the parallel text files (built in a temporary
        folder, renamed into place), mark the manifest complete and delete the chunks."""
        manifest = self.read_manifest()
        if manifest is None:
            raise DistillError(f"{self.manifest_path}: missing")
        tmp = self.root / f".corpus.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files: dict[tuple[str, ...], tuple] = {}
        counts: dict[tuple[str, ...], int] = {}
        written = 0
        try:
            for k in range(n_chunks):
                for record in self.read_chunk(k):
                    key = tuple(record["domains"])
                    if key not in files:
                        name = f"part{len(files)}"
                        files[key] = (name,
                                      (tmp / f"{name}.{src_lang}").open("w", encoding="utf-8",
                                                                        newline="\n"),
                                      (tmp / f"{name}.{tgt_lang}").open("w", encoding="utf-8",
                                                                        newline="\n"))
                        counts[key] = 0
                    _, src_f, tgt_f = files[key]
                    src_f.write(record["src"].translate(_BREAKS) + "\n")
                    tgt_f.write(record["tgt"].translate(_BREAKS) + "\n")
                    counts[key] += 1
                    written += 1
        finally:
            for _, src_f, tgt_f in files.values():
                src_f.close()
                tgt_f.close()
        if written != rows:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DistillError(f"{self.chunks_dir}: the chunks hold {written} lines, the "
                               f"sources {rows}; delete the folder to distill again")
        shutil.rmtree(self.corpus_dir, ignore_errors=True)
        os.replace(tmp, self.corpus_dir)
        manifest.update(complete=True, rows=rows, chunks=n_chunks, groups=[
            {"name": name, "domains": list(key), "rows": counts[key]}
            for key, (name, _, _) in files.items()])
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(self.chunks_dir, ignore_errors=True)
        return self.groups()
