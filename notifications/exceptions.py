from core.errors import TransientError


class ChannelUnavailable(TransientError):
    """The mail server or push server did not answer: retry later."""


class NotificationBusy(TransientError):
    """Another worker holds a fresh claim on this notification: look again later, once it has sent or died."""


class RecipientRefused(Exception):
    """The server refused the message for good (bad address, unknown topic): recorded, never retried."""
