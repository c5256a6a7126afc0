"""The sidecar keeps the contract in protocol/contract.json, and PROTOCOL.md tells the same codes.

contract.json is the data both test suites check against (the Elixir side in
elixir_client/test/zarr_bridge/contract_test.exs); neither side reads the
other's source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import pybridge
from pybridge import errors
from pybridge.methods import method_table
from pybridge.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CONTRACT = json.loads((REPO / "protocol" / "contract.json").read_text())


def contract_codes(*sent_by: str) -> list[str]:
    return [e["code"] for e in CONTRACT["errors"] if e["sent_by"] in sent_by]


def error_classes() -> list[type[errors.BridgeError]]:
    todo, found = [errors.BridgeError], []
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__:
                found.append(sub)
                todo.append(sub)
    return found


def test_codes_are_unique_and_each_says_who_sends_it():
    codes = [e["code"] for e in CONTRACT["errors"]]
    assert len(codes) == len(set(codes))
    for entry in CONTRACT["errors"]:
        assert entry["sent_by"] in CONTRACT["sent_by"], entry
        assert entry["meaning"].strip(), entry


def test_the_sidecar_error_classes_carry_the_contract_codes():
    python = sorted(cls.code for cls in error_classes())
    assert len(python) == len(set(python)), "two error classes share a code"
    assert python == sorted(contract_codes("sidecar", "none"))


def test_every_sidecar_code_has_an_error_class_that_reaches_the_wire():
    # error_to_wire is what the server replies with: each class's code must survive it.
    from pybridge.rpc.server import error_to_wire

    wire = {error_to_wire(cls("m"))["code"] for cls in error_classes()}
    assert set(contract_codes("sidecar")) <= wire


def _spec(methods: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "test_only": m.test_only, "payload": list(m.payload),
             "params": {p: {"type": s.expected, "required": s.required}
                        for p, s in m.params.items()}}
            for name, m in methods.items()]


def test_the_method_table_is_the_contract_method_list():
    table = method_table(Settings(workers=1, test_methods=True))
    assert sorted(_spec(table), key=lambda m: m["name"]) == \
        sorted(CONTRACT["methods"], key=lambda m: m["name"])


def test_test_methods_exist_only_when_enabled():
    table = method_table(Settings(workers=1, test_methods=False))
    assert sorted(table) == sorted(m["name"] for m in CONTRACT["methods"] if not m["test_only"])


def test_the_protocol_version_is_the_sidecar_one():
    assert CONTRACT["protocol_version"] == pybridge.PROTOCOL_VERSION


@pytest.fixture(scope="module")
def errors_section() -> str:
    text = (REPO / "protocol" / "PROTOCOL.md").read_text()
    return text.split("## 5. Errors", 1)[1].split("\n## ", 1)[0]


def test_protocol_md_section_5_lists_the_sidecar_codes(errors_section):
    table = re.findall(r"^\| `([a-z_]+)` \|", errors_section, re.M)
    assert table == contract_codes("sidecar")


def test_protocol_md_section_5_names_the_client_codes(errors_section):
    client_text = errors_section.split("Client-side codes", 1)[1]
    named = re.findall(r"`([a-z_]+)` \(", client_text)
    assert named == contract_codes("client")


def test_protocol_md_names_every_method():
    text = (REPO / "protocol" / "PROTOCOL.md").read_text()
    missing = [m["name"] for m in CONTRACT["methods"] if f"`{m['name']}`" not in text]
    assert missing == []


def test_every_method_that_takes_bytes_declares_its_payload():
    # The dispatcher resolves the payload of these methods; a method that took
    # data, stream or shm without declaring it would check its transport by hand.
    for m in CONTRACT["methods"]:
        sources = [k for k in ("data", "stream", "shm", "values") if k in m["params"]]
        if m["name"] in ("echo", "codec.encode_many", "codec.decode_many"):
            continue  # echo is a test method; batches carry items or an upload of them
        assert m["payload"] == sources, m["name"]
