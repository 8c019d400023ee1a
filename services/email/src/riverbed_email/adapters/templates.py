"""The ``Renderer`` of requests: a template rendered with the caller's variables, or raw
content.

A template is a folder in the templates directory::

    <templates_dir>/<name>/subject.txt   required; rendered, then folded onto one line
    <templates_dir>/<name>/body.txt      required; the text/plain part
    <templates_dir>/<name>/body.html     optional; the text/html part (autoescaped)

Variables are untrusted input: templates run in Jinja's sandbox, HTML is autoescaped
(``.html`` files only: the text part and the subject are not HTML) and an undefined
variable is an error (``StrictUndefined``) rather than an empty string in a customer's
inbox. Every failure is a ``RenderError`` (``domain.content``) whose message names the
template and what was missing or wrong — and never contains the rendered content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from riverbed_contracts.email import SendEmail
from riverbed_email.domain.content import Content, RenderError, one_line

SUBJECT = "subject.txt"
TEXT = "body.txt"
HTML = "body.html"


class TemplateRenderer:
    """Renders :class:`SendEmail` requests; ``directory`` None allows the raw form only."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._env: SandboxedEnvironment | None = None
        if directory is not None:
            self._env = SandboxedEnvironment(
                loader=jinja2.FileSystemLoader(directory),
                autoescape=jinja2.select_autoescape(
                    enabled_extensions=("html", "htm"), default_for_string=False, default=False
                ),
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
                auto_reload=True,  # a changed template file is picked up without a restart
            )

    def render(self, request: SendEmail) -> Content:
        if request.template is None:
            # the contract guarantees subject and text in the raw form
            assert request.subject is not None
            assert request.text is not None
            return Content(one_line(request.subject), request.text, request.html)
        return self.render_template(request.template, request.variables or {})

    def render_template(self, name: str, variables: dict[str, Any]) -> Content:
        if self._env is None:
            raise RenderError(
                f"template {name!r} requested, but no templates are configured "
                "(set EMAIL_TEMPLATES_DIR); send subject and text instead"
            )
        assert self.directory is not None
        folder = self.directory / name
        if not (folder / SUBJECT).is_file() or not (folder / TEXT).is_file():
            known = ", ".join(self.known_templates()) or "none"
            raise RenderError(
                f"template {name!r} not found: {name}/{SUBJECT} and {name}/{TEXT} are "
                f"required in the templates directory; known templates: {known}"
            )
        subject = one_line(self._render(name, SUBJECT, variables))
        text = self._render(name, TEXT, variables)
        html = self._render(name, HTML, variables) if (folder / HTML).is_file() else None
        return Content(subject, text, html)

    def known_templates(self) -> list[str]:
        if self.directory is None:
            return []
        return sorted(
            entry.name
            for entry in self.directory.iterdir()
            if (entry / SUBJECT).is_file() and (entry / TEXT).is_file()
        )

    def _render(self, name: str, part: str, variables: dict[str, Any]) -> str:
        assert self._env is not None
        where = f"template {name!r} ({name}/{part})"
        try:
            return self._env.get_template(f"{name}/{part}").render(variables)
        except jinja2.UndefinedError as error:
            raise RenderError(f"{where}: variable missing: {error.message}") from None
        except jinja2.TemplateNotFound as error:
            raise RenderError(f"{where}: included template {error.name!r} not found") from None
        except jinja2.TemplateSyntaxError as error:
            raise RenderError(
                f"{where}: syntax error at line {error.lineno}: {error.message}"
            ) from None
        except jinja2.TemplateError as error:  # sandbox violations and the like
            raise RenderError(f"{where}: {type(error).__name__}: {error.message}") from None
        except (TypeError, ValueError, ArithmeticError) as error:
            # a filter or operator given a value of the wrong kind by the caller
            raise RenderError(f"{where}: a variable has the wrong type: {error}") from None
