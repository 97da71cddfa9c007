"""Where a run's files go: a local folder or a URI (`file://`, `s3://`, `gs://`, ...) through `pyarrow.fs`.

Owns
- `OutDir`: the output folder as a pyarrow filesystem and a base path: bytes and text
  in and out, existence, sub-folders, and `check_writable` (one sentence naming the
  fix).  It pickles as its URI, so an actor rebuilds the same filesystem on its node;
- `RowFile`: one CSV of result rows (rounds.csv, agents.csv, plan.csv) that grows by
  whole rows as they happen and is flushed after each batch of rows, so an aborted or
  killed run leaves every finished row on disk; `start(keep_before=r)` cuts an
  existing file back to its rows of rounds before r (resume, recovery).  On a local
  filesystem it keeps one stream open and flushes it; on an object store (S3, GCS:
  objects are immutable, a stream is only uploaded when closed) every flush is one
  more part object, `NAME.parts/part-NNNNNN.csv` with its own header, so a round
  uploads its own rows only (at 10,000 agents agents.csv grows by ~0.7 MB a round;
  rewriting it whole made the uploads grow with the rounds); `read_rows` reads the
  file or its parts back as one table's bytes.
No torch, no Ray.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence

import pyarrow.fs as pafs

from comdml_ray.config import ConfigError


class OutDir:
    """The run's output folder: `uri` is a local path or a filesystem URI such as file:///tmp/x or s3://bucket/x."""

    def __init__(self, uri: str):
        self.uri = uri if "://" in uri else os.path.abspath(uri)
        try:
            self.fs, self.base = pafs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as e:
            raise ConfigError(
                f"cannot open the output location {uri} ({e}); give a local folder or a URI such as file:///path or s3://bucket/path."
            ) from None
        self.base = self.base.rstrip("/")

    def __reduce__(self):
        return OutDir, (self.uri,)

    def __repr__(self) -> str:
        return f"OutDir({self.uri})"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, name: str) -> str:
        return f"{self.base}/{name}" if name else self.base

    def child(self, name: str) -> OutDir:
        """A sub-folder, as an OutDir of its own."""
        return OutDir(f"{self.uri.rstrip('/')}/{name}")

    def makedirs(self, name: str = "") -> None:
        self.fs.create_dir(self.path(name), recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.path(name)) as f:
            f.write(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def delete(self, name: str) -> None:
        """Delete a file or a folder (with its contents); nothing if absent."""
        info = self.fs.get_file_info(self.path(name))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(name))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(name))

    def replace(self, name: str, data: bytes) -> None:
        """Write `name` so that a reader sees the old or the new content, never half of it (write, then move)."""
        if not self.is_local:
            self.write_bytes(name, data)  # an object store's PUT is already all or nothing
            return
        tmp = f"{name}.tmp"
        self.write_bytes(tmp, data)
        self.fs.move(self.path(tmp), self.path(name))

    def listdir(self, name: str = "") -> list[str]:
        sel = pafs.FileSelector(self.path(name), allow_not_found=True)
        return sorted(os.path.basename(i.path) for i in self.fs.get_file_info(sel))

    def check_writable(self) -> OutDir:
        """Create the folder and write a probe file in it; else one sentence naming the fix."""
        try:
            self.makedirs()
            self.write_bytes(".write-test", b"")
            self.delete(".write-test")
        except OSError as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise ConfigError(f"cannot write the output folder --out {self.uri} ({reason}); choose a folder you can write to.") from None
        return self


def _cell(v):
    """A CSV cell: NaN and None are empty (as pandas writes them), floats in full precision (repr)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def parts_folder(name: str) -> str:
    """Where a RowFile on an object store puts its parts."""
    return f"{name}.parts"


def read_rows(out: OutDir, name: str) -> bytes | None:
    """A RowFile's CSV as one table's bytes: the file, or its parts in order under one header; None when neither is there."""
    if out.exists(name):
        return out.read_bytes(name)
    parts = [p for p in out.listdir(parts_folder(name)) if p.endswith(".csv")]
    if not parts:
        return None
    chunks = [out.read_bytes(f"{parts_folder(name)}/{p}") for p in parts]
    return chunks[0] + b"".join(c.split(b"\n", 1)[1] if b"\n" in c else b"" for c in chunks[1:])


class RowFile:
    """A CSV in the output folder that grows row by row, flushed; see the module docstring."""

    def __init__(self, out: OutDir, name: str, columns: Sequence[str]):
        self.out, self.name, self.columns = out, name, list(columns)
        self._stream = None  # local: the open output stream
        self._parts = 0  # object store: part objects written
        self.rows_written = 0

    def start(self, keep_before: int | None = None) -> RowFile:
        """Open the file: new, or (keep_before=r) keeping the existing rows of rounds before r."""
        self.close()
        header = self._line(self.columns)
        lines = []
        existing = read_rows(self.out, self.name) if keep_before is not None else None
        if existing is not None:
            reader = csv.reader(io.StringIO(existing.decode()))
            head = next(reader, None)
            if head is not None:
                at = head.index("round")
                kept = [row for row in reader if row and int(row[at]) < keep_before]
                by_name = [dict(zip(head, row, strict=False)) for row in kept]
                lines = [self._line([d.get(c, "") for c in self.columns]) for d in by_name]
        self.rows_written = len(lines)
        if self.out.is_local:
            self._stream = self.out.fs.open_output_stream(self.out.path(self.name))
            self._stream.write((header + "".join(lines)).encode())
            self._stream.flush()
        else:
            self.delete()
            self.out.makedirs(parts_folder(self.name))  # a no-op on S3 and GCS; filesystems with folders need it
            self._parts = 0
            self._write_part(header + "".join(lines))  # the rows kept (or none): part 0, so the header is there from the start
        return self

    def append(self, rows: Iterable[dict]) -> None:
        """Add whole rows (dicts by column name; missing columns empty) and flush them."""
        new = [self._line([_cell(r.get(c)) for c in self.columns]) for r in rows]
        if not new:
            return
        self.rows_written += len(new)
        if self._stream is not None:
            self._stream.write("".join(new).encode())
            self._stream.flush()
        else:
            self._write_part(self._line(self.columns) + "".join(new))

    def _write_part(self, text: str) -> None:
        self.out.write_text(f"{parts_folder(self.name)}/part-{self._parts:06d}.csv", text)
        self._parts += 1

    def delete(self) -> None:
        """Remove the file (or its parts) from the output folder."""
        self.close()
        self.out.delete(self.name)
        self.out.delete(parts_folder(self.name))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    @staticmethod
    def _line(values: Sequence) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue()
