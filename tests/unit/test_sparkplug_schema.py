"""The committed sparkplug_b_pb2.py is what protoc (grpcio-tools, pinned) makes of the
committed sparkplug_b.proto: regenerating it changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import carousel_gateway.api.mqtt as package

HERE = Path(package.__file__).parent


def test_regenerating_the_module_changes_nothing(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"--python_out={tmp_path}",
            str(HERE / "sparkplug_b.proto"),
        ],
        check=True,
        timeout=60,
    )
    generated = (tmp_path / "sparkplug_b_pb2.py").read_text(encoding="utf-8")
    assert generated == (HERE / "sparkplug_b_pb2.py").read_text(encoding="utf-8")


def test_the_schema_keeps_its_licence_header():
    head = (HERE / "sparkplug_b.proto").read_text(encoding="utf-8")[:1200]
    assert "Eclipse Public" in head and "EPL-2.0" in head
