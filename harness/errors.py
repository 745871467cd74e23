"""Errors the user caused: bad files, bad options. The CLI turns them into exit code 2."""


class InputError(Exception):
    """Bad input. The message names the file, field or record and what was expected."""


class ImplementationError(Exception):
    """An implementation could not be run at all (bad manifest, entry point that does not import)."""
