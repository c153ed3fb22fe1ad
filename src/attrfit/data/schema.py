"""The schema of a table: its heads and each head's classes, in the order that maps names to indices.

It is saved as JSON beside every split, cache and model (and inside every checkpoint), so a
label name always maps to the same index wherever it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from attrfit.core import files
from attrfit.core.errors import AttrfitError


@dataclass(frozen=True)
class Schema:
    """Heads in column order, each with its sorted class names.

    >>> s = Schema(("gender",), {"gender": ("female", "male")})
    >>> s.num_classes
    [2]
    """

    heads: tuple[str, ...]
    classes: dict[str, tuple[str, ...]]

    @property
    def num_classes(self) -> list[int]:
        return [len(self.classes[h]) for h in self.heads]

    def to_dict(self) -> dict:
        return {"heads": list(self.heads), "classes": {h: list(self.classes[h]) for h in self.heads}}

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        try:
            heads = tuple(d["heads"])
            return cls(heads, {h: tuple(d["classes"][h]) for h in heads})
        except (KeyError, TypeError) as e:
            raise AttrfitError(f"malformed schema: missing {e}") from None

    def save(self, path: Path) -> None:
        """Atomic write (temp file then rename): a crash never leaves half a schema."""
        path = Path(path)
        files.write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Schema":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def differences(self, other: "Schema") -> list[str]:
        """Human-readable differences from ``other`` (empty when they match)."""
        out = []
        if self.heads != other.heads:
            out.append(f"heads {list(self.heads)} vs {list(other.heads)}")
        for h in set(self.heads) & set(other.heads):
            if self.classes[h] != other.classes[h]:
                out.append(f"head '{h}' classes {list(self.classes[h])} vs {list(other.classes[h])}")
        return out
