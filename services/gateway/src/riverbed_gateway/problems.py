"""The gateway's problem details: the runtime's, with every refusal counted by reason."""

from __future__ import annotations

from fastapi import FastAPI

from riverbed import problems
from riverbed.problems import PROBLEM_JSON, Problem, field_errors
from riverbed_gateway import metrics

__all__ = ["PROBLEM_JSON", "Problem", "field_errors", "install"]


def install(app: FastAPI) -> problems.Responder:
    return problems.install(
        app,
        on_problem=lambda problem: metrics.REJECTED.labels(problem.reason).inc(),
        unavailable_detail="the event store cannot be reached; nothing was published; retry later",
    )
