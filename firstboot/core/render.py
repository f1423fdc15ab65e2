"""jinja2 templates of the installer (firstboot/templates/), rendered with StrictUndefined.

The templates ship inside the installer as package data, found next to this
module both in a checkout and in the frozen binary (PyInstaller must be told:
--add-data firstboot/templates:firstboot/templates).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - configuration files, not HTML
    )


def render(name: str, **variables: Any) -> str:
    """Render templates/NAME; a variable the template uses but is not given is an error."""
    return _environment().get_template(name).render(**variables)


@cache
def _html_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        # Pages show status data in which any key may be missing (an old box's files, a
        # part not written yet): a missing value shows as nothing, never a broken page.
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=True,  # HTML: every value from the box's state is escaped
    )


def render_html(name: str, **variables: Any) -> str:
    """Render an HTML template (templates/NAME), values escaped."""
    return _html_environment().get_template(name).render(**variables)
