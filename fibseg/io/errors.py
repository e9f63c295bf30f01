"""The errors a user sees: bad input (InputError) and a broken limit of the method
(LimitError)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. The message names the data set, the file, the problem and the fix."""

    def __init__(
        self,
        problem: str,
        *,
        dataset: str | None = None,
        file: str | None = None,
        fix: str | None = None,
    ) -> None:
        where = []
        if dataset:
            where.append(f"data set '{dataset}'")
        if file:
            where.append(f"file '{file}'")
        text = (", ".join(where) + ": " if where else "") + problem
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class LimitError(ValueError):
    """A limit of the method was broken. `problem` and `fix` say what and how; the caller
    turns it into an InputError that names the config key or the file."""

    def __init__(self, problem: str, fix: str, key: str = "") -> None:
        self.problem, self.fix, self.key = problem, fix, key
        super().__init__(f"{problem} Fix: {fix}")
