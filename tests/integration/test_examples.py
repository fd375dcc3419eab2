"""The shipped configs and the README's sample pass `carousel-gateway config check` as the
real command (a subprocess), and examples/gateway.toml shows every setting there is."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from carousel_gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carousel_gateway", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_both_examples_are_shipped() -> None:
    assert [path.name for path in EXAMPLES] == ["gateway-site.toml", "gateway.toml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_passes_config_check(path: Path) -> None:
    done = config_check(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"{path}: OK (")


def readme_toml() -> str:
    """The TOML sample of the README's Configuration section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    (sample,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    return sample


def test_readme_sample_passes_config_check(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(readme_toml(), encoding="utf-8")
    done = config_check(path)
    assert done.returncode == 0, done.stdout + done.stderr


def settings(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key a config file can hold, as ``table.key`` (the tables' own keys too)."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        inner = field.annotation
        for arg in (inner, *getattr(inner, "__args__", ())):
            for candidate in (arg, *getattr(arg, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    keys |= settings(candidate, f"{prefix}{name}.")
    return keys


def written(data: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            keys.add(prefix + key)
            keys |= written(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for item in data:
            keys |= written(item, prefix)
    return keys


def test_the_reference_example_shows_every_setting() -> None:
    """A setting added to config.py must be added (and explained) in examples/gateway.toml;
    the ones that switch a feature on may be there as commented-out lines."""
    text = (ROOT / "examples" / "gateway.toml").read_text(encoding="utf-8")
    commented = re.sub(r"^# ?(?=[a-z0-9_]+ = |\[)", "", text, flags=re.M)
    present = written(tomllib.loads(commented))
    assert settings(GatewayConfig) - present == set()


def test_readme_links_only_files_of_this_repository() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    links = [t for t in targets if "://" not in t]
    assert links, "the README links docs/"
    assert [link for link in links if not (ROOT / link).exists()] == []
    assert "shared/" not in text
