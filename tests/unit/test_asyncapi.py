"""The AsyncAPI document: generated from the models, every reference resolves, docs/ is current."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from carousel_gateway import wire
from carousel_gateway.api.asyncapi import build_asyncapi
from carousel_gateway.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document, ref):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_document_is_asyncapi_3_and_every_ref_resolves():
    document = build_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    refs = list(_refs(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/")
        _resolve(document, ref)


def test_every_message_model_is_documented():
    names = {m["title"] for m in build_asyncapi()["components"]["messages"].values()}
    expected = {model.__name__ for model in (*wire.CLIENT_MESSAGES, *wire.SERVER_MESSAGES)}
    assert names == expected


def test_error_codes_are_listed():
    schema = build_asyncapi()["components"]["schemas"]["ErrorCode"]
    assert set(schema["enum"]) >= {
        "MACHINE_NOT_FOUND",
        "INVALID_COMMAND",
        "CONNECTION_ERROR",
        "BUSY",
        "INVALID_MESSAGE_FORMAT",
    }


def test_committed_copy_in_docs_is_current():
    result = CliRunner().invoke(app, ["asyncapi"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(DOCS.read_text(encoding="utf-8")), (
        "docs/asyncapi.json is stale: run `carousel-gateway asyncapi -o docs/asyncapi.json`"
    )
