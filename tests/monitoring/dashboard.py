"""The queries of a Grafana dashboard, and Grafana's variables substituted into them.

Pure functions on the dashboard's JSON model: `queries` lists every panel's PromQL, and
`substitute` does what Grafana does to a query before it reaches Prometheus, so the queries can
be checked by promtool or run against a real Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# The variables charts/carstream/files/dashboard.json uses in its queries, with values for a
# test: namespace and stage are multi-value regex matchers (=~) whose "All" is .*; pipeline is
# one pipeline; $__rate_interval is Grafana's (at least 4 scrape intervals).
DEFAULT_VARIABLES: Mapping[str, str | Sequence[str]] = {
    "namespace": ".*",
    "pipeline": "carstream",
    "stage": ".*",
    "__rate_interval": "2m",
    "__interval": "30s",
    "__range": "1h",
}

# $name, ${name}, ${name:format} and the deprecated [[name]].
_VARIABLE = re.compile(r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<plain>\w+)|\[\[(?P<old>\w+)\]\]")
_REGEX_SPECIALS = re.compile(r"([\\.+*?()|\[\]{}^$])")


# Words of PromQL that look like metric names but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "atan2", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, label lists (by, on, ...), numbers and durations are taken out, without
    the functions (a name followed by a parenthesis) and keywords."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, those inside rows included; rows themselves are not panels."""
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target of every panel, in the dashboard's order."""
    return [
        (str(panel.get("title", "")), target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets") or []
        if target.get("expr")
    ]


def variables_used(expr: str) -> set[str]:
    """The names of the variables an expression refers to."""
    return {
        match.group("braced") or match.group("plain") or match.group("old")
        for match in _VARIABLE.finditer(expr)
    }


def _regex_escaped(value: str) -> str:
    # Inside a PromQL string a backslash is itself escaped: \\. in the query is \. in the regex.
    return _REGEX_SPECIALS.sub(r"\\\\\1", value)


def _formatted(value: str | Sequence[str]) -> str:
    """A single value as it is; several as Grafana's Prometheus format does: (a|b), each
    value regex-escaped."""
    if isinstance(value, str):
        return value
    values = list(value)
    if len(values) == 1:
        return _regex_escaped(values[0])
    return "(" + "|".join(_regex_escaped(item) for item in values) + ")"


def substitute(expr: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    """`expr` with every $name, ${name}, ${name:format} and [[name]] replaced by its value.

    A value is a string (taken as it is: a regex such as .* for "All") or a list of values
    (joined as a regex alternation). A variable without a value is an error, so that a query
    never reaches Prometheus with a dollar sign left in it.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain") or match.group("old")
        if name not in variables:
            raise KeyError(f"no value for the dashboard variable ${name} in {expr!r}")
        return _formatted(variables[name])

    return _VARIABLE.sub(replace, expr)
