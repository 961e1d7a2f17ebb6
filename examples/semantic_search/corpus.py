"""A corpus that ships with Python: the docstrings of standard-library modules, classes and
functions (their first paragraph), and natural-language queries about them.

Deterministic: the same modules in the same order give the same texts on any machine with the
same Python version. ``documents(limit)`` keeps the first ``limit``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings

__all__ = ["MODULES", "QUERIES", "documents"]

_NAMES = (
    "abc argparse array ast asyncio base64 bisect bz2 calendar cmath codecs collections "
    "colorsys concurrent.futures configparser contextlib copy csv dataclasses datetime decimal "
    "difflib dis email.message enum filecmp fnmatch fractions ftplib functools gettext glob "
    "graphlib gzip hashlib heapq hmac html html.parser http.client http.server imaplib inspect "
    "io ipaddress itertools json keyword linecache locale logging lzma mailbox math mimetypes "
    "mmap numbers operator os os.path pathlib pickle platform plistlib poplib pprint queue "
    "random re reprlib sched secrets selectors shelve shlex shutil signal smtplib socket "
    "socketserver sqlite3 ssl statistics string struct subprocess sys tarfile tempfile textwrap "
    "threading time timeit tokenize traceback types typing unittest urllib.parse "
    "urllib.request uuid warnings weakref wave xml.dom.minidom xml.etree.ElementTree zipfile "
    "zlib"
)
MODULES = tuple(_NAMES.split())
"""The standard-library modules whose docstrings make the corpus, in corpus order."""

QUERIES = (
    "split a file path into the directory and the file name",
    "parse command line arguments and options",
    "read and write comma separated values",
    "compute the greatest common divisor of two integers",
    "run a shell command in a child process and capture its output",
    "sleep for a number of seconds",
    "make a temporary directory that is removed afterwards",
    "compress data with gzip",
    "encode binary data as base64 text",
    "serialize a Python object to a JSON string",
    "find all matches of a regular expression in a string",
    "sort items with a priority queue",
    "binary search in a sorted list",
    "count how many times each element occurs",
    "combine several iterables into one",
    "cache the results of a function call",
    "wait for many coroutines to finish at the same time",
    "create a thread and start it",
    "open a network connection to a host and port",
    "format a date as text",
    "generate a random number between two values",
    "compute the mean and standard deviation of data",
    "copy a file and its permissions",
    "walk a directory tree",
    "hash a message with a secret key",
    "decimal floating point arithmetic with exact rounding",
    "print the stack trace of an exception",
    "a dictionary that remembers insertion order",
    "compare two sequences and show the differences",
    "parse an XML document into a tree of elements",
    "log messages to a file with levels",
    "extract the files of a zip archive",
)


def _paragraph(doc: str, limit: int = 600) -> str:
    first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    text = " ".join(first.split())
    return text[:limit]


def _members(module: object) -> list[object]:
    out: list[object] = [module]
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if obj is None or getattr(obj, "__module__", getattr(module, "__name__", "")) is None:
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            out.append(obj)
            if inspect.isclass(obj):
                for attr in sorted(vars(obj)):
                    if not attr.startswith("_") and inspect.isroutine(vars(obj)[attr]):
                        out.append(vars(obj)[attr])
    return out


def documents(limit: int | None = None) -> list[str]:
    """The corpus: distinct first paragraphs of docstrings, at least 20 characters, in module
    order (``limit``: the first that many)."""
    seen: set[str] = set()
    docs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a deprecated module's import warns
        for name in MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for obj in _members(module):
                doc = inspect.getdoc(obj) if not isinstance(obj, str) else None
                if not doc:
                    continue
                text = _paragraph(doc)
                if len(text) >= 20 and text not in seen:
                    seen.add(text)
                    docs.append(text)
                    if limit is not None and len(docs) >= limit:
                        return docs
    return docs
