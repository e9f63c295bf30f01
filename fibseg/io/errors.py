"""The errors a user sees: bad input (InputError), several at once (InputErrors, gathered by
`Faults`/`collect`), and a broken limit of the method (LimitError)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


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
        self.problem, self.dataset, self.file, self.fix = problem, dataset, file, fix
        where = []
        if dataset:
            where.append(f"data set '{dataset}'")
        if file:
            where.append(f"file '{file}'")
        text = (", ".join(where) + ": " if where else "") + problem
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class InputErrors(InputError):
    """Several faults of the inputs, found in one check: a count, then each fault's message
    (data set, file, problem, fix) on its own line."""

    def __init__(self, errors: Iterable[InputError]) -> None:
        self.errors = flatten(errors)
        count = len(self.errors)
        header = f"{count} problem{'s' if count != 1 else ''} in the inputs:"
        super().__init__("\n".join([header, *(f"- {error}" for error in self.errors)]))

    def __reduce__(self):  # pickled with its faults, not its text
        return InputErrors, (self.errors,)


def flatten(errors: Iterable[InputError]) -> list[InputError]:
    """The single faults of `errors` (an InputErrors stands for its own), each once."""
    found: list[InputError] = []
    for error in errors:
        for single in error.errors if isinstance(error, InputErrors) else [error]:
            if str(single) not in map(str, found):
                found.append(single)
    return found


class Faults:
    """The faults that a run of checks found: each check runs in `check()`, and
    `raise_all()` raises them together at the end (a lone fault as itself)."""

    def __init__(self) -> None:
        self.errors: list[InputError] = []

    def add(self, error: InputError) -> None:
        self.errors = flatten([*self.errors, error])

    @contextmanager
    def check(self) -> Iterator[None]:
        """Run a check: an InputError it raises is kept, and the checks go on."""
        try:
            yield
        except InputError as error:
            self.add(error)

    def datasets(self) -> set[str]:
        """The data sets that a fault names."""
        return {error.dataset for error in self.errors if error.dataset}

    def raise_all(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise InputErrors(self.errors)


@contextmanager
def collect() -> Iterator[Faults]:
    """Gather the faults of the checks in the block (`with faults.check(): ...`) and raise
    them together when it ends; an InputError that leaves the block (a fault after which
    nothing more can be checked) ends it and is raised with the others."""
    faults = Faults()
    try:
        yield faults
    except InputError as error:
        faults.add(error)
    faults.raise_all()


def check_all(check: Callable[[T], object], items: Iterable[T]) -> None:
    """Run `check` on every item and raise the faults of all of them at once."""
    with collect() as faults:
        for item in items:
            with faults.check():
                check(item)


class LimitError(ValueError):
    """A limit of the method was broken. `problem` and `fix` say what and how; the caller
    turns it into an InputError that names the config key or the file."""

    def __init__(self, problem: str, fix: str, key: str = "") -> None:
        self.problem, self.fix, self.key = problem, fix, key
        super().__init__(f"{problem} Fix: {fix}")
