"""The error raised for a corpus file that cannot be read, and the helpers that turn library
errors into it. A core module: it imports nothing of the suite, so readers at every layer (the
corpora, the ``.csd`` reader the features share) raise the same type."""

from __future__ import annotations

import contextlib
import csv
import functools


class CorpusFormatError(ValueError):
    """A corpus file whose name or content cannot be read; the message names the file and the
    problem. Every corpus parser raises it (or a subclass) for bad input, nothing else."""


@contextlib.contextmanager
def reading(path, error: type[CorpusFormatError] = CorpusFormatError):
    """Turn what a library raises on a malformed file (a decode error, a missing key or column, a
    bad number, HDF5's OSError) into ``error`` naming the file; a missing file stays a
    FileNotFoundError, and the parser's own errors pass through."""
    try:
        yield
    except (CorpusFormatError, FileNotFoundError):
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OSError, csv.Error) as exc:
        raise error(f"{path}: cannot be read as this corpus's file ({type(exc).__name__}: {exc})") from exc


def reads_file(error: type[CorpusFormatError] = CorpusFormatError):
    """Decorator of a reader whose first argument is the file's path: ``reading`` around it."""

    def decorate(read):
        @functools.wraps(read)
        def wrapper(path, *args, **kwargs):
            with reading(path, error):
                return read(path, *args, **kwargs)

        return wrapper

    return decorate
