"""The error types every arkbox command raises, with the exit codes the CLIs map them to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class ArkboxError(Exception):
    """A failure a person can act on: what failed, and a hint saying what to do."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BadInputError(ArkboxError):
    """The input (a config, a file, an argument) is wrong; nothing was changed."""

    exit_code = EXIT_BAD_INPUT
