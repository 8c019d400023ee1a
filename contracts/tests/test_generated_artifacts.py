"""The generated JSON Schemas and AsyncAPI document: current, compatible, and correct."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from riverbed import keys
from riverbed_contracts import REGISTRY, STREAMS, CloudEvent, EventSpec, new_event


def _load_generator() -> Any:
    """contracts/generate.py: a development tool beside the package, not part of it."""
    path = Path(__file__).parents[1] / "generate.py"
    spec = importlib.util.spec_from_file_location("contracts_generate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()

ADA = "ada@example.com"
PAYMENT = {"provider": "stripe", "provider_payment_id": "pi_1", "amount": 1999, "currency": "EUR"}


def validator(event_type: str) -> Draft202012Validator:
    schema = json.loads((gen.CONTRACTS_DIR / gen.schema_path(event_type)).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def document(event_type: str, data: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    """What a stream entry's ``event`` field holds, parsed back into JSON values."""
    loaded: dict[str, Any] = json.loads(
        CloudEvent(type=event_type, data=data, **attributes).to_json()
    )
    return loaded


def test_generated_files_on_disk_are_up_to_date() -> None:
    stale = gen.stale_files(gen.CONTRACTS_DIR)
    assert stale == [], f"stale: {stale}; run `make contracts`"


def test_committed_schemas_have_no_breaking_change() -> None:
    assert gen.breaking(gen.committed_schemas_on_disk(gen.CONTRACTS_DIR)) == []


def test_there_is_exactly_one_committed_schema_per_registered_type() -> None:
    assert sorted(gen.committed_schemas_on_disk(gen.CONTRACTS_DIR)) == sorted(REGISTRY)


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_schema_accepts_every_documented_example_as_a_whole_event(spec: EventSpec) -> None:
    check = validator(spec.type)
    for example in spec.model.model_json_schema()["examples"]:
        check.validate(document(spec.type, example, subject="s", correlationid="c"))
        check.validate(json.loads(new_event(spec.model.model_validate(example)).to_json()))


# (type, data, valid?): pydantic and the JSON Schema must agree on each.
CASES = [
    ("email.requested.v1", {"to": ADA, "template": "welcome"}, True),
    ("email.requested.v1", {"to": ADA, "subject": "Hi", "text": "Hello", "html": "<p/>"}, True),
    ("email.requested.v1", {"to": ADA, "template": "w", "subject": None, "later": 1}, True),
    ("email.requested.v1", {"to": ADA, "template": "welcome", "subject": "Hi"}, False),
    ("email.requested.v1", {"to": ADA, "template": "w", "variables": {}, "text": "x"}, False),
    ("email.requested.v1", {"to": ADA, "subject": "Hi"}, False),
    ("email.requested.v1", {"to": ADA, "variables": {"a": 1}}, False),
    ("email.requested.v1", {"to": ADA}, False),
    ("email.requested.v1", {"to": "ada", "template": "welcome"}, False),
    ("email.requested.v1", {"to": ADA, "template": "w", "category": "urgent"}, False),
    ("payment.succeeded.v1", PAYMENT, True),
    ("payment.succeeded.v1", {**PAYMENT, "currency": "eur"}, False),
    ("payment.succeeded.v1", {**PAYMENT, "amount": 19.99}, False),
    ("payment.succeeded.v1", {**PAYMENT, "amount": 0}, False),
    ("payment.refunded.v1", PAYMENT, False),
    ("webhook.delivery.succeeded.v1", {"delivery_id": "d", "endpoint_id": "e"}, False),
]


@pytest.mark.parametrize(("event_type", "data", "valid"), CASES)
def test_schema_and_model_agree(event_type: str, data: dict[str, Any], valid: bool) -> None:
    schema_errors = list(validator(event_type).iter_errors(document(event_type, data)))
    assert (not schema_errors) is valid, schema_errors
    try:
        REGISTRY[event_type].model.model_validate(data)
        model_valid = True
    except ValueError:
        model_valid = False
    assert model_valid is valid


def test_schema_pins_the_type_and_requires_the_core_attributes() -> None:
    check = validator("payment.succeeded.v1")
    event = document("payment.succeeded.v1", PAYMENT)
    assert not list(check.iter_errors({**event, "tracestate": "x"}))  # unknown extension: fine
    for broken in (
        {**event, "type": "payment.failed.v1"},
        {**event, "specversion": "0.3"},
        {**event, "traceId": "x"},
        {key: value for key, value in event.items() if key != "id"},
        {key: value for key, value in event.items() if key != "time"},
    ):
        assert list(check.iter_errors(broken)), broken


def test_asyncapi_has_one_channel_per_stream_addressed_by_its_redis_key() -> None:
    doc = json.loads((gen.CONTRACTS_DIR / gen.ASYNCAPI_FILE).read_text())
    assert doc["asyncapi"] == "3.0.0"
    channels = doc["channels"].values()
    assert sorted(channel["title"] for channel in channels) == list(STREAMS)
    for channel in channels:
        (tag,) = channel["parameters"]["tag"]["enum"]
        address = channel["address"].replace("{tag}", tag)
        assert address == channel["x-riverbed-stream-key"] == keys.stream_key(channel["title"])
        assert channel["x-riverbed-entry-field"] == "event"


def test_asyncapi_messages_are_the_event_types_with_their_schemas() -> None:
    doc = json.loads((gen.CONTRACTS_DIR / gen.ASYNCAPI_FILE).read_text())
    names = []
    for channel in doc["channels"].values():
        for reference in channel["messages"].values():
            message = doc["components"]["messages"][reference["$ref"].rsplit("/", 1)[1]]
            names.append(message["name"])
            assert REGISTRY[message["name"]].stream == channel["title"]
            schema = doc["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
            expected = gen.event_schema(REGISTRY[message["name"]])
            del expected["$schema"], expected["$id"]
            assert schema == expected
    assert sorted(names) == sorted(REGISTRY)


def test_check_fails_on_missing_files_and_passes_after_generate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gen.main(["--dir", str(tmp_path), "check"]) == 1
    assert "schemas/email.requested.v1.json" in capsys.readouterr().err
    assert gen.main(["--dir", str(tmp_path), "generate"]) == 0
    assert gen.main(["--dir", str(tmp_path), "check"]) == 0
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")}
    assert written == set(gen.generated_files())


def test_output_is_deterministic_sorted_json_with_a_trailing_newline() -> None:
    first, second = gen.generated_files(), gen.generated_files()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        assert text == gen.render(json.loads(text))


def add_legacy_property(root: Path, event_type: str) -> None:
    """Pretend the committed schema had a property that the code no longer has."""
    path = root / gen.schema_path(event_type)
    schema = json.loads(path.read_text())
    schema["properties"]["data"]["properties"]["legacy"] = {"type": "string"}
    path.write_text(gen.render(schema))


def test_check_and_generate_refuse_a_breaking_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen.main(["--dir", str(tmp_path), "generate"])
    add_legacy_property(tmp_path, "email.sent.v1")
    capsys.readouterr()
    assert gen.main(["--dir", str(tmp_path), "check"]) == 1
    err = capsys.readouterr().err
    assert "email.sent.v1: data.legacy: property removed" in err
    assert "register a new version" in err
    before = (tmp_path / gen.schema_path("email.sent.v1")).read_text()
    assert gen.main(["--dir", str(tmp_path), "generate"]) == 1
    assert (tmp_path / gen.schema_path("email.sent.v1")).read_text() == before


def test_a_committed_schema_of_a_type_no_longer_registered_is_breaking(tmp_path: Path) -> None:
    gen.main(["--dir", str(tmp_path), "generate"])
    shutil.copy(tmp_path / gen.schema_path("email.sent.v1"), tmp_path / "schemas/sms.sent.v1.json")
    assert gen.breaking(gen.committed_schemas_on_disk(tmp_path)) == [
        "sms.sent.v1: event type removed (its schema is committed)"
    ]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_check_against_a_git_revision_catches_a_regenerated_breaking_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    root = tmp_path / "contracts"
    git("init", "-q")
    gen.main(["--dir", str(root), "generate"])
    add_legacy_property(root, "payment.failed.v1")
    git("add", ".")
    git("commit", "-q", "-m", "release v1 with legacy")
    # The developer now regenerates over the committed file by hand: disk is consistent ...
    (root / gen.schema_path("payment.failed.v1")).unlink()
    gen.main(["--dir", str(root), "generate"])
    assert gen.main(["--dir", str(root), "check"]) == 0
    # ... but git remembers what was released.
    assert gen.main(["--dir", str(root), "check", "--against", "HEAD"]) == 1
    assert "payment.failed.v1: data.legacy: property removed" in capsys.readouterr().err
    assert set(gen.committed_schemas_in_git(root, "HEAD")) == set(REGISTRY)


def test_asyncapi_operations_say_which_service_sends_and_which_receives_each_channel() -> None:
    doc = json.loads((gen.CONTRACTS_DIR / gen.ASYNCAPI_FILE).read_text())
    operations = doc["operations"]

    def by(service: str, action: str) -> set[str]:
        return {
            op["channel"]["$ref"].rsplit("/", 1)[1]
            for op in operations.values()
            if op["x-riverbed-service"] == service and op["action"] == action
        }

    # internal types: only their producer sends them; the gateway never does
    assert "webhook_delivery_requested" in by("webhooks", "send")
    assert "webhook_delivery_requested" not in by("gateway", "send")
    assert "payment_recorded" in by("payments", "send")
    assert "payment_recorded" not in by("gateway", "send")
    # public types: the gateway sends them
    assert {"email_requested", "payment_succeeded"} <= by("gateway", "send")
    assert "email_requested" in by("email", "receive")
    assert {"payment_succeeded", "payment_recorded"} <= by("webhooks", "receive")
    for operation in operations.values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        assert channel in doc["channels"]
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(f"#/channels/{channel}/messages/")
            assert message["$ref"].rsplit("/", 1)[1] in doc["channels"][channel]["messages"]
