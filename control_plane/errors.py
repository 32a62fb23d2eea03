"""The control plane's domain errors; the admin API turns each into its HTTP answer."""

from __future__ import annotations

from automations.problems import Problem  # the domain's, also raised from here


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, problems: list[Problem] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = problems or []


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Invalid(DomainError):
    status = 422
    code = "validation_failed"

    def __init__(self, problems: list[Problem], detail: str | None = None) -> None:
        super().__init__(detail or summarize(problems), problems)


def summarize(problems: list[Problem]) -> str:
    if not problems:
        return "the input is invalid"
    first = problems[0]
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"{first.field}: {first.reason}{more}"
