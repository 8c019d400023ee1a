"""What an email says, before it becomes a MIME message: subject, text and optional HTML.

Produced by a renderer (:class:`~riverbed_email.service_layer.ports.Renderer`) from a
template or from the request's raw content; a request that cannot be rendered is a
:class:`RenderError`, which gives the request up for good.
"""

from __future__ import annotations

from dataclasses import dataclass

from riverbed.errors import RiverbedError


class RenderError(RiverbedError):
    """The request cannot be rendered: no such template, a missing variable, a bad template.

    Its message names the template and what was missing or wrong, never rendered content.
    """


@dataclass(frozen=True)
class Content:
    subject: str
    text: str
    html: str | None = None


def one_line(subject: str) -> str:
    """A subject on one line: a header cannot hold a line break (header injection)."""
    return " ".join(subject.split())
