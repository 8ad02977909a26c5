"""Which station files the page may show: only those inside the evidence folders (the
heatmaps, the kept inputs, the history's evidence), addressed by folder index and path
relative to it, so a URL can name nothing else (no ``..``, no link out of a folder)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class Evidence:
    def __init__(self, roots: list[Path]) -> None:
        self.roots = [root.resolve() for root in roots]

    def url(self, path: str | None) -> str | None:
        """The URL of a station file, None when it lies in no evidence folder."""
        if not path:
            return None
        try:
            real = Path(path).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        for index, root in enumerate(self.roots):
            if real.is_relative_to(root):
                return f"/evidence/{index}/{quote(real.relative_to(root).as_posix())}"
        return None

    def file(self, index: str, relative: str) -> Path | None:
        """The image an evidence URL names, None unless it is one inside its folder."""
        if not index.isdigit() or int(index) >= len(self.roots) or "\0" in relative:
            return None
        root = self.roots[int(index)]
        try:
            real = (root / relative).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        inside = real.is_relative_to(root) and real.suffix.lower() in IMAGES
        return real if inside and real.is_file() else None
