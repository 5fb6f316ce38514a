"""Where media bytes live on disk: content-addressed files under `<data_dir>/media/`.

    media/content/ab/cd/abcd...      the bytes, named by their SHA-256 (hex)
    media/thumbnails/ab/cd/abcd.../  thumbnails of that content, one file per size
    media/tmp/<instance>/            uploads and thumbnails being made by one process

Several processes may share the directory (docs/scaling.md): each receives into a tmp
directory of its own, and at start-up clears only that one (a process of role `main`,
alone by definition, clears all of `tmp/`).

The functions here block (file system calls): run them on the media thread pool, or in
the database transaction holding the content's lock (`repository.py`)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


class MediaFiles:
    def __init__(self, root: Path, instance_name: str) -> None:
        self.root = root
        self.tmp_dir = root / "tmp" / instance_name

    def prepare(self, alone: bool) -> None:
        """Create the directories; drop what an earlier run of this instance (when `alone`,
        of any instance) left half-received."""
        shutil.rmtree(self.root / "tmp" if alone else self.tmp_dir, ignore_errors=True)
        for directory in (self.root / "content", self.root / "thumbnails", self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _fan_out(sha256: str) -> Path:
        return Path(sha256[:2]) / sha256[2:4] / sha256

    def content_path(self, sha256: str) -> Path:
        return self.root / "content" / self._fan_out(sha256)

    def thumbnail_dir(self, sha256: str) -> Path:
        return self.root / "thumbnails" / self._fan_out(sha256)

    def thumbnail_path(self, sha256: str, width: int, height: int, method: str,
                       animated: bool, ext: str) -> Path:
        name = f"{width}x{height}-{method}{'-animated' if animated else ''}.{ext}"
        return self.thumbnail_dir(sha256) / name

    def commit(self, tmp_path: Path, sha256: str) -> Path:
        """Give a received file its content address (identical content is stored once).
        The received file stays where it is: its owner removes it once the row naming the
        content is written."""
        final = self.content_path(sha256)
        self.place(tmp_path, final)
        return final

    def place(self, tmp_path: Path, final: Path) -> None:
        """Link `final` to `tmp_path`, unless it exists. Safe to run again (a retried
        transaction): the received file is still there to link, even if the content was
        removed in between."""
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp_path, final)
        except FileExistsError:
            pass
        except OSError:  # no hard links here (another file system): a copy, moved in whole
            partial = final.with_name(final.name + f".{os.getpid()}.part")
            shutil.copyfile(tmp_path, partial)
            os.replace(partial, final)

    def remove(self, sha256: str) -> None:
        """Remove a content file and its thumbnails (missing ones are fine). The fan-out
        directories stay: another upload may be placing a file in them."""
        self.content_path(sha256).unlink(missing_ok=True)
        shutil.rmtree(self.thumbnail_dir(sha256), ignore_errors=True)
