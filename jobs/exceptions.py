from core.errors import Conflict, NotFound


class DeadLetterNotFound(NotFound):
    code = "dead_letter_not_found"


class DeadLetterAlreadyReplayed(Conflict):
    code = "dead_letter_already_replayed"
