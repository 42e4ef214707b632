"""The one error type of the EDM reader: every refusal, every malformed file, every network that does not fit its
tensors is an `EDMFileError` (a ValueError) with one line, which the job prints before exiting with code 2."""


class EDMFileError(ValueError):
    """A file the reader refuses (one line)."""


class NotEDM(EDMFileError):
    """The file is not a pickle of NVlabs' format (missing, truncated, or another kind of object)."""


class Refused(EDMFileError):
    """The file holds something NVlabs' format never does (an opcode, a call, a shape): refused, not read."""


class RefusedGlobal(Refused):
    """The pickle asks for a global the reader does not answer (e.g. `os.system`)."""


def short(text: str, limit: int = 120) -> str:
    """A string for a message, cut to `limit` characters (a message never holds `str()` of a file's object)."""
    return text if len(text) <= limit else text[:limit] + "..."
