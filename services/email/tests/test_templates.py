"""Rendering: templates from a directory (autoescaped HTML, strict variables) or raw content."""

from __future__ import annotations

from pathlib import Path

import pytest

from riverbed_contracts.email import SendEmail
from riverbed_email.adapters.templates import TemplateRenderer
from riverbed_email.domain.content import Content, RenderError

SHIPPED = Path(__file__).parents[1] / "templates"


def write_template(root: Path, name: str, **parts: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for part, text in parts.items():
        (folder / part.replace("_", ".")).write_text(text)


@pytest.fixture
def renderer(tmp_path: Path) -> TemplateRenderer:
    write_template(
        tmp_path,
        "receipt",
        subject_txt="Receipt {{ number }}\n",
        body_txt="Hi {{ name }}, you paid {{ amount }}.\n",
        body_html="<p>Hi {{ name }}, you paid <b>{{ amount }}</b>.</p>\n",
    )
    write_template(tmp_path, "plain", subject_txt="Plain", body_txt="Only text for {{ name }}")
    return TemplateRenderer(tmp_path)


def test_a_template_renders_subject_text_and_html(renderer: TemplateRenderer) -> None:
    request = SendEmail(
        to="ada@example.com",
        template="receipt",
        variables={"number": 7, "name": "Ada", "amount": "10 EUR"},
    )
    assert renderer.render(request) == Content(
        subject="Receipt 7",
        text="Hi Ada, you paid 10 EUR.\n",
        html="<p>Hi Ada, you paid <b>10 EUR</b>.</p>\n",
    )


def test_variables_are_escaped_in_html_but_not_in_text(renderer: TemplateRenderer) -> None:
    hostile = '<script>alert("x")</script> & Co'
    content = renderer.render_template("receipt", {"number": 1, "name": hostile, "amount": "1"})
    assert content.html is not None
    assert "<script>" not in content.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in content.html
    assert hostile in content.text


def test_a_missing_variable_is_an_error_that_names_it(renderer: TemplateRenderer) -> None:
    with pytest.raises(RenderError, match=r"template 'receipt'.*variable missing: 'amount'"):
        renderer.render_template("receipt", {"number": 1, "name": "Ada"})


def test_a_missing_attribute_of_a_variable_is_an_error_too(tmp_path: Path) -> None:
    write_template(tmp_path, "nested", subject_txt="x", body_txt="{{ user.email }}")
    with pytest.raises(RenderError, match="has no attribute 'email'"):
        TemplateRenderer(tmp_path).render_template("nested", {"user": {"name": "Ada"}})


def test_a_missing_template_is_an_error_that_names_it_and_the_known_ones(
    renderer: TemplateRenderer,
) -> None:
    with pytest.raises(RenderError) as caught:
        renderer.render_template("welcome", {})
    message = str(caught.value)
    assert "template 'welcome' not found" in message
    assert "known templates: plain, receipt" in message


def test_a_missing_included_template_is_named(tmp_path: Path) -> None:
    write_template(tmp_path, "inc", subject_txt="x", body_txt="{% include 'footer.txt' %}")
    with pytest.raises(RenderError, match=r"included template 'footer\.txt' not found"):
        TemplateRenderer(tmp_path).render_template("inc", {})


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    write_template(tmp_path, "broken", subject_txt="x", body_txt="line one\n{% if %}\n")
    with pytest.raises(RenderError, match=r"broken/body\.txt.*syntax error at line 2"):
        TemplateRenderer(tmp_path).render_template("broken", {})


def test_the_sandbox_refuses_unsafe_attribute_access(tmp_path: Path) -> None:
    write_template(tmp_path, "evil", subject_txt="x", body_txt="{{ name.__class__.__mro__ }}")
    with pytest.raises(RenderError, match="template 'evil'"):
        TemplateRenderer(tmp_path).render_template("evil", {"name": "Ada"})


def test_the_html_part_is_optional(renderer: TemplateRenderer) -> None:
    content = renderer.render_template("plain", {"name": "Ada"})
    assert content == Content("Plain", "Only text for Ada", None)


def test_a_subject_is_folded_onto_one_line_so_no_header_can_be_injected(tmp_path: Path) -> None:
    write_template(tmp_path, "inject", subject_txt="{{ s }}", body_txt="x")
    content = TemplateRenderer(tmp_path).render_template("inject", {"s": "Hi\r\nBcc: x@evil.test"})
    assert content.subject == "Hi Bcc: x@evil.test"


def test_the_raw_form_is_taken_as_given_without_templates() -> None:
    request = SendEmail(to="ada@example.com", subject="Hello there", text="Hi", html="<p>Hi</p>")
    assert TemplateRenderer(None).render(request) == Content("Hello there", "Hi", "<p>Hi</p>")
    # a line break (or NUL) never reaches the header: the contract refuses it on the way in
    with pytest.raises(ValueError, match="subject"):
        SendEmail(to="ada@example.com", subject="Hello\nthere", text="Hi")


def test_a_template_without_a_templates_directory_says_what_to_set() -> None:
    request = SendEmail(to="ada@example.com", template="welcome")
    with pytest.raises(RenderError, match="EMAIL_TEMPLATES_DIR"):
        TemplateRenderer(None).render(request)


def test_the_shipped_welcome_template_renders() -> None:
    content = TemplateRenderer(SHIPPED).render_template("welcome", {"name": "Ada <3"})
    assert content.subject == "Welcome to Riverbed, Ada <3"
    assert content.html is not None
    assert "Ada &lt;3" in content.html
