"""BigQuery names: projects, datasets, tables, locations and labels.

Checked where they enter (component registration, `BigQueryDataset(...)`), so a backtick,
a quote or a SQL fragment never reaches a query we build. Import-light: no google-cloud.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Tuple

# Project ids: lowercase letters, digits and hyphens, starting with a letter, at most 30
# characters; legacy domain-scoped ids carry a "domain:" prefix. (Google also asks for at
# least 6 characters; emulators commonly use "test", so shorter ids are accepted.)
_PROJECT = re.compile(r"(?:[a-z][a-z0-9.\-]{0,61}[a-z0-9]:)?[a-z](?:[a-z0-9\-]{0,28}[a-z0-9])?")
# Dataset ids: letters, digits and underscores, at most 1024 characters.
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
# Table ids: Unicode letters, marks, digits, connectors and dashes (no spaces, quotes,
# backticks, dots or semicolons), at most 1024 characters.
_TABLE = re.compile(r"[\w\-]{1,1024}")
# Multi-regions (US, EU) and regions (europe-west4, us-central1, northamerica-northeast2).
_LOCATION = re.compile(r"US|EU|[a-z]+-[a-z]+[0-9]+")
# Labels: keys start with a lowercase letter; keys and values hold lowercase letters,
# digits, underscores and dashes, at most 63 characters.
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_\-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_\-]{0,63}")
_NOT_LABEL_CHAR = re.compile(r"[^a-z0-9_\-]")
RESERVED_LABEL_PREFIX = "zenml_"


def check_project(value: str, field: str = "project") -> str:
    value = value.strip()
    if not _PROJECT.fullmatch(value):
        raise ValueError(
            f"{field}={value!r} is not a Google Cloud project id: lowercase letters, digits and "
            "hyphens, starting with a letter, at most 30 characters (e.g. 'my-project-123')"
        )
    return value


def check_dataset(value: str, field: str = "dataset") -> str:
    if not _DATASET.fullmatch(value):
        raise ValueError(
            f"{field}={value!r} is not a BigQuery dataset id: letters, digits and underscores "
            "only (e.g. 'analytics_eu')"
        )
    return value


def check_table(value: str, field: str = "table") -> str:
    if not _TABLE.fullmatch(value):
        raise ValueError(
            f"{field}={value!r} is not a BigQuery table id: letters, digits, underscores and "
            "dashes only (no quotes, backticks, spaces, dots or SQL)"
        )
    return value


def parse_dataset_id(value: str, default_project: str, field: str = "dataset") -> Tuple[str, str]:
    """`(project, dataset)` of "dataset" or "project.dataset"."""
    project, _, dataset = value.strip().rpartition(".")
    return check_project(project or default_project, field), check_dataset(dataset, field)


def parse_table_id(value: str, field: str = "table_id") -> Tuple[str, str, str]:
    """`(project, dataset, table)` of a fully qualified "project.dataset.table"."""
    parts = value.strip().split(".")
    if len(parts) != 3:
        raise ValueError(
            f"{field}={value!r} is not a fully qualified table id; use 'project.dataset.table'"
        )
    project, dataset, table = parts
    where = f"{field} {value.strip()!r}:"
    return (
        check_project(project, f"{where} project part"),
        check_dataset(dataset, f"{where} dataset part"),
        check_table(table, f"{where} table part"),
    )


def check_location(value: str) -> str:
    """`US`/`EU` (any case) or a region name like `europe-west4`."""
    text = value.strip()
    normalized = text.upper() if text.upper() in ("US", "EU") else text.lower()
    if not _LOCATION.fullmatch(normalized):
        raise ValueError(
            f"location={value!r} is not a BigQuery location; use a multi-region (US, EU) or a "
            "region such as europe-west4 or us-central1"
        )
    return normalized


def check_labels(labels: Mapping[str, str], field: str = "labels") -> Dict[str, str]:
    """Labels as BigQuery accepts them; keys starting with `zenml_` are ours."""
    checked: Dict[str, str] = {}
    for key, value in labels.items():
        value = str(value)
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"{field} key {key!r} is not a BigQuery label key: lowercase letters, digits, "
                "'_' and '-', starting with a letter, at most 63 characters"
            )
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise ValueError(
                f"{field} key {key!r}: keys starting with {RESERVED_LABEL_PREFIX!r} are set by the "
                "component (pipeline, run and step)"
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(
                f"{field}[{key!r}]={value!r} is not a BigQuery label value: lowercase letters, "
                "digits, '_' and '-', at most 63 characters"
            )
        checked[key] = value
    return checked


def label_value(text: Optional[str]) -> str:
    """Any text as a valid label value: lowercased, other characters as '_', 63 at most."""
    return _NOT_LABEL_CHAR.sub("_", (text or "").lower())[:63]
