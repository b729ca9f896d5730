"""The README's "Testing your schema" example is a real test module: run each of its tests."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python(section: str) -> str:
    """The first ```python block of the README section titled ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.S)
    assert blocks, f"no python block in README section {section!r}"
    return str(blocks[-1])


def example_module() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_testing_example"}
    exec(compile(readme_python("Testing your schema"), "README.md", "exec"), namespace)
    return namespace


EXAMPLE = example_module()
TESTS = sorted(name for name in EXAMPLE if name.startswith("test_"))


def test_the_example_has_tests() -> None:
    assert len(TESTS) >= 3


@pytest.mark.parametrize("name", TESTS)
async def test_readme_example(name: str) -> None:
    test = EXAMPLE[name]
    assert inspect.iscoroutinefunction(test)
    await test()
