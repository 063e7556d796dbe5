from core.errors import TransientError


class FunctionUnavailable(TransientError):
    """The function's service throttled us (429), failed (5xx) or could not be reached: retry with backoff."""


class FunctionRefused(Exception):
    """The function's service refused the invocation for good (a 4xx other than throttling: no such function,
    access denied, payload too large): the batch is dead-lettered, never retried by itself."""


class ExportDisabled(Exception):
    """A batch reached the export while no function is configured (turned off after it was sent): dead-lettered,
    so that ops can replay it once a function is configured again."""
