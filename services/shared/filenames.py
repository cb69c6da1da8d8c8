"""Safe file names: what uploads and the attachments of synced mail are listed under.

A name is shown to staff and clients and offered again on download, so nothing in it may
disguise it: no path, no control character, and no bidirectional control (U+202E turns
"invoice\u202efdp.exe" into what reads as "invoiceexe.pdf").
"""

from __future__ import annotations

import os
import unicodedata

from services.shared.errors import ErrorCode, input_error

MAX_LENGTH = 255
# Bidirectional controls: ALM, LRM, RLM, the embeddings and overrides, the isolates.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# C0, DEL and C1 controls, lone surrogates (no text at all), line and paragraph separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _kept(character: str) -> bool:
    return character not in BIDI_CONTROLS and unicodedata.category(character) not in (
        _DROPPED_CATEGORIES
    )


def safe_filename(filename: str | None) -> str:
    """The name without its path, control characters or bidirectional controls, at most
    255 characters (the end kept: it holds the extension); "" when nothing is left."""
    visible = "".join(c for c in filename or "" if _kept(c))
    name = os.path.basename(visible.strip().replace("\\", "/"))
    return name[-MAX_LENGTH:].strip(" .")


def clean_filename(filename: str | None, *field: str) -> str:
    """The safe name of an upload; INVALID_FILENAME when nothing usable is left."""
    name = safe_filename(filename)
    if not name:
        raise input_error(ErrorCode.INVALID_FILENAME, "The file needs a usable name.", *field)
    return name
