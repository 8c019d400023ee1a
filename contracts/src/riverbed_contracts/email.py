"""Email contracts: the command to send one email, and its two outcomes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from riverbed_contracts.payload import Id, Payload

#: characters that never belong in a header value: C0 controls but TAB (NUL, CR, LF…), DEL,
#: C1 controls, and the Unicode line and paragraph separators (str.splitlines breaks there).
#: A header is one line of text; any of these either ends it early (header injection) or is
#: refused by the SMTP relay, so a value holding one is refused at validation.
_NOT_IN_HEADERS = r"\x00-\x08\x0A-\x1F\x7F-\x9F\u2028\u2029"

# Deliberately loose (something@domain.tld, no whitespace, no control characters): the SMTP
# server is the judge of deliverability, and email-validator would be one more dependency.
EmailAddress = Annotated[
    str,
    StringConstraints(
        max_length=254,
        pattern=rf"^[^@\s{_NOT_IN_HEADERS}]+@[^@\s{_NOT_IN_HEADERS}]+\.[^@\s{_NOT_IN_HEADERS}]+$",
    ),
    Field(description="An email address such as ada@example.com", examples=["ada@example.com"]),
]
#: one line of header text (a subject): 1 to 998 characters (RFC 5322's line limit), TAB
#: allowed, no other control character
HeaderText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=998, pattern=rf"^[^{_NOT_IN_HEADERS}]+$"),
]
TemplateName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$"),
    Field(description="Name of a template known to the email service, e.g. 'welcome'"),
]
Category = Literal["transactional", "bulk"]

_TEMPLATE_FIELDS = ("template", "variables")
_RAW_FIELDS = ("subject", "text", "html")


def _given(*names: str) -> dict[str, Any]:
    """JSON Schema: every one of ``names`` is present and not null."""
    return {"required": list(names), "properties": {n: {"not": {"type": "null"}} for n in names}}


# The "exactly one form" rule of SendEmail, for validators in other languages.
_ONE_FORM_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "title": "template form",
            **_given("template"),
            "not": {"anyOf": [_given(name) for name in _RAW_FIELDS]},
        },
        {
            "title": "raw form",
            **_given("subject", "text"),
            "not": {"anyOf": [_given(name) for name in _TEMPLATE_FIELDS]},
        },
    ]
}


class SendEmail(Payload):
    """Command ``email.requested.v1``: send one email, from a template or as raw content.

    Exactly one form: the template form (``template``, optional ``variables``) or
    the raw form (``subject``, ``text``, optional ``html``).
    """

    model_config = ConfigDict(
        json_schema_extra={
            **_ONE_FORM_SCHEMA,
            "examples": [
                {
                    "to": "ada@example.com",
                    "template": "welcome",
                    "variables": {"name": "Ada"},
                    "category": "transactional",
                },
                {"to": "ada@example.com", "subject": "Your receipt", "text": "Thank you."},
            ],
        }
    )

    to: EmailAddress
    category: Category = Field(
        default="transactional",
        description="transactional mail is sent first; bulk mail may be rate limited",
    )
    template: TemplateName | None = None
    variables: dict[str, Any] | None = Field(
        default=None, description="Values the template refers to (template form only)"
    )
    subject: HeaderText | None = Field(
        default=None,
        description="Subject line (raw form): no control characters but TAB, at most 998",
    )
    text: str | None = Field(default=None, description="Plain-text body (raw form)")
    html: str | None = Field(default=None, description="Optional HTML body (raw form)")

    @model_validator(mode="after")
    def _exactly_one_form(self) -> SendEmail:
        template = [name for name in _TEMPLATE_FIELDS if getattr(self, name) is not None]
        raw = [name for name in _RAW_FIELDS if getattr(self, name) is not None]
        if template and raw:
            raise ValueError(
                f"give either the template form (template, variables) or the raw form "
                f"(subject, text, html), not both: got {template + raw}"
            )
        if template and self.template is None:
            raise ValueError("'variables' belongs to the template form: 'template' is missing")
        if not template:
            missing = [name for name in ("subject", "text") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    "give either the template form (template, optional variables) or the raw "
                    f"form (subject, text, optional html): missing {missing}"
                )
        return self


class EmailSent(Payload):
    """Event ``email.sent.v1``: the SMTP server accepted the email."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "6f1c3c1e-8f1e-4a43-9a8e-3f0a4a0b7d21",
                    "to": "ada@example.com",
                    "message_id": "<20240501120000.1234@mail.example.com>",
                    "attempts": 1,
                }
            ]
        }
    )

    request_id: Id = Field(description="Event id of the email.requested command")
    to: EmailAddress
    message_id: Id = Field(description="The Message-ID header of the email sent")
    attempts: int = Field(default=1, ge=1, description="Deliveries it took, this one included")


class EmailFailed(Payload):
    """Event ``email.failed.v1``: the email will not be sent (rejected, or out of retries)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "6f1c3c1e-8f1e-4a43-9a8e-3f0a4a0b7d21",
                    "to": "ada@example.com",
                    "reason": "550 5.1.1 mailbox unavailable",
                    "permanent": True,
                    "smtp_code": 550,
                    "attempts": 1,
                }
            ]
        }
    )

    request_id: Id = Field(description="Event id of the email.requested command")
    to: EmailAddress
    reason: str = Field(min_length=1, description="Why, for humans")
    permanent: bool = Field(
        description="true: the address or content was refused; false: retries ran out"
    )
    smtp_code: int | None = Field(default=None, ge=200, le=599)
    attempts: int = Field(default=1, ge=1)


class EmailSuppressed(Payload):
    """Event ``email.suppressed.v1``: the email was not sent, its address is suppressed.

    An address goes on the suppression list when a server refuses it permanently (5xx)
    or an operator adds it; it stays there until an operator removes it.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "6f1c3c1e-8f1e-4a43-9a8e-3f0a4a0b7d21",
                    "to": "ada@example.com",
                    "reason": "550 5.1.1 mailbox unavailable",
                    "smtp_code": 550,
                }
            ]
        }
    )

    request_id: Id = Field(description="Event id of the email.requested command")
    to: EmailAddress
    reason: str = Field(min_length=1, description="Why the address is suppressed, for humans")
    smtp_code: int | None = Field(
        default=None, ge=200, le=599, description="The reply that suppressed it, if any"
    )
