"""The leaderboard's user errors besides ValueError: an unknown name (suite, task, method, reference)."""


class UnknownNameError(KeyError):
    """A KeyError whose message prints without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
