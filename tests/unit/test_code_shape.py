"""The product code keeps the shape docs/architecture.md promises: small modules, short
functions, so a behaviour is found in one hop and read on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("builder", "firstboot")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def product_modules() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))


def test_no_product_module_is_over_600_lines() -> None:
    too_long = {str(p.relative_to(ROOT)): n for p in product_modules()
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"split these modules (lines): {too_long}"


def test_no_product_function_is_60_lines_or_longer() -> None:
    too_long = {}
    for path in product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines >= MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not too_long, f"split these functions (lines): {too_long}"
