"""What a chapter calls inside its kernel: the notes that stop a chapter gracefully on a city
without its data (``require_*``) and the page's view of warnings and tables (:func:`reader_view`).

IPython and the method registry (it loads torch) are imported where used: a chapter imports
this module first.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from musecl.datasets.sources import DataMissingError, fetch


class DataUnavailable(Exception):
    """A chapter's data or modalities are missing: the book run keeps the chapter up to its
    displayed note instead of failing the build."""


def require_data(name: str, data_dir: str | Path | None = None,
                 files: Sequence[str] | None = None) -> dict[str, Path]:
    """Inside a chapter: the verified raw files of data set ``name`` (``files``; None: all; see
    :func:`musecl.datasets.sources.fetch`), or a note of how to get them and
    :class:`DataUnavailable`. A file with the wrong sha256 still fails loudly."""
    try:
        return fetch(name, data_dir=data_dir, progress=False, files=files)
    except DataMissingError as err:
        from IPython.display import Markdown, display

        display(Markdown(
            f"```{{note}}\nThis chapter needs the **{name}** data set, which is not on this machine "
            f"and could not be downloaded:\n\n{err}\n\nGet it with `musecl fetch {name}` (online), or "
            f"point `MUSECL_DATA_DIR` at a data directory that holds it, then run the chapter again. "
            "The rest of this chapter needs that data and is left out of this build.\n```"))
        raise DataUnavailable(f"{name} data set unavailable") from None


def require_modalities(city, needs: tuple[str, ...], shows: str, any_of: bool = False) -> None:
    """Inside a chapter: go on when the city has ``needs`` (all; with ``any_of``, one); otherwise
    display what is missing and what the chapter would show (``shows``), and raise
    :class:`DataUnavailable`."""
    # imported here: it loads torch, which `musecl book`'s own process never needs
    from musecl.methods.base import INPUTS, join_words

    have = set(city.meta.modalities)
    missing = [m for m in needs if m not in have]
    if not missing or (any_of and len(missing) < len(needs)):
        return
    _stop_chapter(city, join_words([INPUTS[m] for m in missing], "or" if any_of else "and"), shows)


def require_method(city, name: str, shows: str) -> None:
    """As :func:`require_modalities`, for what method ``name`` needs (``needs`` and ``needs_any``)."""
    from musecl.methods.base import describe_needs, unsupported_reason

    if (reason := unsupported_reason(name, city)) is not None:
        _stop_chapter(city, f"what {name} needs ({describe_needs(name)})", shows,
                      stop_line=f"{city.name} has {reason}, which {name} needs")


def _stop_chapter(city, needed: str, shows: str, stop_line: str | None = None) -> None:
    """The note, then :class:`DataUnavailable` with ``stop_line``, the line the book run prints."""
    from IPython.display import Markdown, display

    from musecl.methods.base import INPUTS

    listed = ", ".join(INPUTS[m] for m in city.meta.modalities) or "none of the four modalities"
    display(Markdown(
        f"```{{note}}\nThis chapter needs {needed}, which **{city.name}** does not have (it has: {listed}). "
        f"With them it would show {shows}.\n\nTo see it, add the missing data to the city folder (the "
        "*city folder format* page says how, `musecl validate` checks it) or read the chapter as built on "
        "the book's default toy city, which has all four. `musecl methods CITY` lists the methods this city "
        "supports; the results chapter (8) runs those.\n```"))
    raise DataUnavailable(stop_line or f"{city.name} lacks {needed}")


def reader_view() -> None:
    """Run first, hidden, in every chapter the book executes: warnings become short notes, each
    once, instead of stderr blocks with file paths; table cells show their whole text (pandas cuts
    at 50 characters). A chapter run by hand keeps the usual ways."""
    from IPython import get_ipython
    from IPython.display import Markdown, display

    said = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        note = f"> **{category.__name__}:** {message}"
        if note not in said:
            said.add(note)
            display(Markdown(note))

    warnings.showwarning = show
    pd.set_option("display.max_colwidth", None)
    shell = get_ipython()
    if shell is not None:  # DataFrames drawn with frame_html
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, frame_html)


def _positional(index) -> bool:
    """A default 0..n-1 index without a name: row numbers, which tell the reader nothing."""
    return (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
            and index.name is None)


def frame_html(frame) -> str | None:
    """A DataFrame's HTML without row numbers, index names in the last header row."""
    index = frame.index
    named = not _positional(index) and None not in index.names
    if (named and frame.columns.nlevels == 1 and frame.columns.name is None
            and not set(index.names) & set(frame.columns)):
        frame = frame.reset_index()
    elif named and index.nlevels == 1 and frame.columns.nlevels > 1 and frame.columns.names[-1] is None:
        # several header rows: the index name goes in the corner of the last one
        return frame.rename_axis(None).rename_axis(columns=[*frame.columns.names[:-1], index.name])._repr_html_()
    elif not _positional(index):
        return frame._repr_html_()
    max_rows, min_rows = pd.get_option("display.max_rows"), pd.get_option("display.min_rows")
    if max_rows and min_rows and len(frame) > max_rows:  # as pandas: a long table shows min_rows
        max_rows = min_rows
    return frame.to_html(notebook=True, index=False, max_rows=max_rows,
                         max_cols=pd.get_option("display.max_columns"),
                         show_dimensions=pd.get_option("display.show_dimensions"),
                         float_format=pd.get_option("display.float_format"))
