"""The options tables of the engine pages match the flavors' config classes.

Each engine page (and docs/lifecycle.md for the options every engine has, docs/stacks.md for
the bundle) has one table `| option | default | per step | what it does | a bad value gets |`.
For every page:
- it lists exactly the options its classes declare: a new option without docs, or docs of
  a removed one, fail here;
- each default is the field's default (`required` for a field without one);
- "per step" is `yes` exactly for the fields of the flavor's settings class;
- the bad value (`` `value` → "part of the error" ``) is refused by the config class with
  an error containing that part.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

import pytest
from pydantic import BaseModel

from tests.docs import pages
from zenml_compute_engines import (
    BaseEngineConfig,
    BigQueryEngineConfig,
    BigQueryEngineSettings,
    DaskEngineConfig,
    DaskEngineSettings,
    EngineBundleConfig,
    RayEngineConfig,
    RayEngineSettings,
    SparkEngineConfig,
    SparkEngineSettings,
)

HEADER = ["option", "default", "per step", "what it does", "a bad value gets"]
_BAD = re.compile(r'^`(?P<value>[^`]*)`\s*→\s*"(?P<message>.+)"$')
_CODE = re.compile(r"`([^`]*)`")


@dataclass(frozen=True)
class Page:
    """A page with an options table, and the classes it documents."""

    path: Path
    declared: List[Type[BaseModel]]  # classes whose own fields the table lists
    settings: Optional[Type[BaseModel]]  # the step settings class, if any
    configs: List[Type[BaseModel]]  # config classes the bad values are checked against
    base: Dict[str, Any]  # required fields besides the one under test


ENGINE_BASES: Dict[Type[BaseModel], Dict[str, Any]] = {
    SparkEngineConfig: {}, DaskEngineConfig: {}, RayEngineConfig: {}, BigQueryEngineConfig: {"project": "p"},
}
PAGES = [
    Page(pages.DOCS / "spark.md", [SparkEngineConfig, SparkEngineSettings], SparkEngineSettings, [SparkEngineConfig], {}),
    Page(pages.DOCS / "dask.md", [DaskEngineConfig, DaskEngineSettings], DaskEngineSettings, [DaskEngineConfig], {}),
    Page(pages.DOCS / "ray.md", [RayEngineConfig, RayEngineSettings], RayEngineSettings, [RayEngineConfig], {}),
    Page(pages.DOCS / "bigquery.md", [BigQueryEngineConfig, BigQueryEngineSettings], BigQueryEngineSettings,
         [BigQueryEngineConfig], {"project": "p"}),
    Page(pages.DOCS / "lifecycle.md", [BaseEngineConfig], None, list(ENGINE_BASES), {}),
    Page(pages.DOCS / "stacks.md", [EngineBundleConfig], None, [EngineBundleConfig], {}),
]


def options_table(path: Path) -> Dict[str, List[str]]:
    """`{option: [default, per step, what it does, a bad value gets]}` of the page's one options table."""
    found = [table for table in pages.tables(path) if table[0] == HEADER]
    assert len(found) == 1, f"{path.name} must have exactly one options table with the header {HEADER}"
    rows = {}
    for cells in found[0][1:]:
        name = _CODE.fullmatch(cells[0])
        assert name, f"{path.name}: the option cell {cells[0]!r} must be one `name`"
        assert name.group(1) not in rows, f"{path.name}: {name.group(1)} is listed twice"
        rows[name.group(1)] = cells[1:]
    return rows


def literal(text: str) -> Any:
    """A table value as Python: `True`, `7`, `{}`, `None` are literals; `local[*]` stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def declared_fields(page: Page) -> set:
    """The fields the page's classes declare themselves (not those they inherit)."""
    return {name for cls in page.declared for name in cls.__dict__.get("__annotations__", {})
            if name in cls.model_fields}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.path.name)
def test_the_table_lists_exactly_the_declared_options(page: Page):
    documented = set(options_table(page.path))
    declared = declared_fields(page)
    assert documented == declared, (
        f"{page.path.name}: undocumented {sorted(declared - documented)}, documented but no option "
        f"{sorted(documented - declared)}"
    )


@pytest.mark.parametrize("config", list(ENGINE_BASES) + [EngineBundleConfig], ids=lambda c: c.__name__)
def test_every_option_of_every_flavor_is_documented(config: Type[BaseModel]):
    documented = set()
    for page in PAGES:
        if config in page.configs or any(issubclass(config, cls) and cls is not BaseEngineConfig
                                         for cls in page.declared):
            documented |= set(options_table(page.path))
    if issubclass(config, BaseEngineConfig):
        documented |= set(options_table(pages.DOCS / "lifecycle.md"))
    assert set(config.model_fields) <= documented, sorted(set(config.model_fields) - documented)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.path.name)
def test_defaults_and_step_settings_are_the_classes(page: Page):
    fields = {name: field for cls in page.declared for name, field in cls.model_fields.items()}
    for name, (default, per_step, _, _) in options_table(page.path).items():
        field = fields[name]
        if field.is_required():
            assert default == "required", f"{page.path.name}: {name} has no default; say `required`"
        else:
            code = _CODE.match(default)
            assert code, f"{page.path.name}: {name}'s default cell must start with a `value`"
            actual = field.default_factory() if field.default_factory is not None else field.default
            assert literal(code.group(1)) == actual, f"{page.path.name}: {name} defaults to {actual!r}"
        expected = "yes" if page.settings is not None and name in page.settings.model_fields else "no"
        assert per_step == expected, f"{page.path.name}: {name} per step is {expected!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.path.name)
def test_each_documented_bad_value_gets_the_documented_error(page: Page):
    for name, (_, _, _, bad) in options_table(page.path).items():
        match = _BAD.match(bad)
        assert match, f"{page.path.name}: {name}'s bad value must read `value` → \"part of the error\""
        value, message = literal(match.group("value")), match.group("message")
        for config in page.configs:
            base = ENGINE_BASES.get(config, page.base)
            with pytest.raises(ValueError) as refused:  # pydantic's ValidationError is a ValueError
                config(**{**base, name: value})
            assert message in str(refused.value), f"{page.path.name}: {name}={value!r}: {refused.value}"
