"""Exceptions raised by xtrieve. Every one subclasses :class:`XtrieveError`."""
from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


class XtrieveError(Exception):
    """Base class: a problem xtrieve can name (the CLI prints it without a traceback)."""


class ConfigError(XtrieveError, ValueError):
    """A configuration is invalid: unknown key, bad value or wrong type."""


class UnknownConfigKeyError(ConfigError, TypeError):
    """A config built with a key it does not have (also a TypeError, as Python raises for an
    unexpected keyword argument)."""


class InputError(XtrieveError, ValueError):
    """Bad user input: empty or missing text, duplicate ids, wrong dimension, bad query."""


class ModelLoadError(XtrieveError):
    """A folder or name that is not a model xtrieve can load."""


class ModelMismatchError(XtrieveError):
    """The encoder given does not match the one the index was built with."""


class IndexFormatError(XtrieveError):
    """A folder that is not an xtrieve index, or one whose files are corrupt."""


class IndexLockedError(XtrieveError):
    """Another writer holds the index's lock, or writers replaced its commit during every attempt
    to open it (try again)."""


class FilterError(XtrieveError, ValueError):
    """A metadata filter that cannot be parsed or names an unknown column."""


def check_unicode(text: str, what: str) -> str:
    """``text`` if it can be written as UTF-8, else an InputError naming ``what`` and the lone
    surrogate (half of an emoji cut by a JSON writer, or bytes that were not UTF-8)."""
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise InputError(f"{what}: not valid Unicode: a lone surrogate {bad.group()!r} at character {bad.start()} "
                         "(half of a cut emoji, or bytes that were not UTF-8)")
    return text
