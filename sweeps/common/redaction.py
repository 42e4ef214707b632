"""Credentials never reach the tracking store or the logs (params, tags, artifacts, log lines).

A tracking or Optuna URL may carry a password (`postgresql://user:pw@host/db`,
`http://user:pw@host:5000`, `...?password=pw`); what is logged keeps everything but the secret,
written `***`, so a run still says which server and database it used.
"""
import logging
import re

_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@/\s]+)@")
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|token|secret|api_key|apikey|access_key)=)[^&;\s]+",
                    re.IGNORECASE)


def redact(value):
    """`value` with URL passwords and secret query parameters replaced by `***` (non-strings unchanged)."""
    if not isinstance(value, str):
        return value
    return _QUERY.sub(r"\g<head>***", _USERINFO.sub(r"\g<head>:***@", value))


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def redact_logs() -> None:
    """Filter every handler of the root logger (Hydra's console and file handlers) once."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
