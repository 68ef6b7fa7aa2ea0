"""Tests of the job-parameter contract (shepard.params)."""

from __future__ import annotations

import math
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shepard.errors import ParamsError
from shepard.model import ParamValue
from shepard.params import (
    EXTRA_RESERVED,
    MAX_ARG_STRLEN,
    RESERVED,
    RUNTIME_ENV_MARGIN,
    check_env_size,
    env_total_limit,
    env_value,
    find_key,
    parse_params_json,
    validate_params,
)

ORIGINAL_RESERVED = {
    "UUID",
    "START_TIME",
    "END_TIME",
    "JOB_STATUS",
    "EFS_INPUT_NAME",
    "EFS_OUTPUT_NAME",
    "LUSTRE_INPUT_NAME",
    "LUSTRE_OUTPUT_NAME",
    "ROOT_INPUT_NAME",
    "ROOT_OUTPUT_NAME",
    "INPUTS_BUCKET",
    "OUTPUTS_BUCKET",
    "ERROR_BUCKET",
    "INPUT_ZIP_NAME",
    "PATH",
    "HOSTNAME",
    "USES_EFS",
    "USES_LUSTRE",
    "LUSTRE_READ_ONLY_PATH",
    "EFS_READ_ONLY_PATH",
    "ULIMIT_FILENO",
    "IS_INVOKED",
    "ALLOW_DOCKER_ACCESS",
}
ALL_RESERVED = sorted(ORIGINAL_RESERVED | {"QUICK_DEPLOY_BUCKET", "ERRORS_BUCKET"})


def _problem_lines(exc: pytest.ExceptionInfo[ParamsError]) -> list[str]:
    return [line for line in str(exc.value).splitlines() if line.startswith("  - ")]


# --- reserved names ----------------------------------------------------------------------------


def test_reserved_sets_are_exactly_the_contract() -> None:
    assert RESERVED == ORIGINAL_RESERVED
    assert len(RESERVED) == 23
    assert set(EXTRA_RESERVED) == {"QUICK_DEPLOY_BUCKET", "ERRORS_BUCKET"}


def _cases(name: str) -> list[str]:
    mixed = "".join(c.lower() if i % 2 else c for i, c in enumerate(name))
    return [name, name.lower(), name.capitalize(), mixed]


@pytest.mark.parametrize("name", ALL_RESERVED)
def test_every_reserved_name_is_rejected_in_any_case(name: str) -> None:
    for variant in _cases(name):
        with pytest.raises(ParamsError, match="set by the runtime") as exc:
            validate_params({variant: "x", "FINE": 1})
        assert variant in str(exc.value)


def test_reserved_error_lists_every_reserved_key_used() -> None:
    with pytest.raises(ParamsError) as exc:
        validate_params({"uuid": 1, "OK": 2, "Path": "/bin", "HOSTNAME": "h"})
    message = str(exc.value)
    for key in ("uuid", "Path", "HOSTNAME"):
        assert key in message
    assert "OK" not in message.replace("HOSTNAME", "")


def test_names_that_merely_contain_a_reserved_name_are_fine() -> None:
    params = {"MY_PATH": "a", "UUID2": "b", "PATHS": "c", "XHOSTNAME": "d"}
    assert validate_params(params) == params


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["1ABC", "A-B", "", "A B", "é", "NAMÉ", "A.B", "A\nB", "ABC\n", "$X", "A=B", "٣X"]
)
def test_invalid_names_are_rejected_with_the_key_named(key: str) -> None:
    with pytest.raises(ParamsError) as exc:
        validate_params({key: "v"})
    message = str(exc.value)
    assert repr(key) in message or (key == "" and "empty key" in message)
    assert "valid variable name" in message


@pytest.mark.parametrize("key", ["A", "_", "_1", "a1_B", "TAG", "x" * 200, "Tag_2"])
def test_valid_names_are_kept_exactly(key: str) -> None:
    assert validate_params({key: 1}) == {key: 1}


def test_non_string_key_is_rejected() -> None:
    with pytest.raises(ParamsError, match="not a string"):
        validate_params({1: "x"})


def test_keys_are_case_sensitive_and_kept_in_order() -> None:
    params = {"b": 1, "a": "x", "A": "y", "TAG": "t", "tag": "u"}
    result = validate_params(params)
    assert result == params
    assert list(result) == ["b", "a", "A", "TAG", "tag"]


# --- values ------------------------------------------------------------------------------------


def test_value_types_are_normalised() -> None:
    result = validate_params(
        {"S": "text", "T": True, "F": False, "I": -7, "BIG": 10**30, "FL": 3.0, "N": None}
    )
    assert result == {
        "S": "text",
        "T": True,
        "F": False,
        "I": -7,
        "BIG": 10**30,
        "FL": 3,
        "N": "None",
    }
    assert isinstance(result["FL"], int) and not isinstance(result["FL"], bool)
    assert result["T"] is True and result["F"] is False


def test_empty_string_and_empty_object_are_fine() -> None:
    assert validate_params({}) == {}
    assert validate_params({"E": ""}) == {"E": ""}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (2.5, "whole number"),
        (-0.1, "whole number"),
        (math.inf, "finite"),
        (math.nan, "finite"),
        ({"x": 1}, "nested objects"),
        ([1, 2], "arrays"),
        ([], "arrays"),
        ("a\x00b", "NUL"),
        ("\ud800", "Unicode"),
        (b"bytes", "bytes"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(value: object, words: str) -> None:
    with pytest.raises(ParamsError, match=words) as exc:
        validate_params({"MY_KEY": value})
    assert "'MY_KEY'" in str(exc.value)


def test_huge_integer_is_rejected() -> None:
    with pytest.raises(ParamsError, match="too large"):
        validate_params({"N": 10**5000})


@pytest.mark.parametrize(
    ("obj", "kind"),
    [([1], "a list"), ("x", "a string"), (3, "a number"), (None, "null"), (True, "a boolean")],
)
def test_non_object_is_rejected(obj: object, kind: str) -> None:
    with pytest.raises(ParamsError, match=f"must be a JSON object, got {kind}"):
        validate_params(obj)


def test_source_names_the_origin() -> None:
    with pytest.raises(ParamsError, match=r"^my-file\.json must be a JSON object"):
        validate_params([], source="my-file.json")
    with pytest.raises(ParamsError, match=r"^invalid my-file\.json:"):
        validate_params({"1": 1}, source="my-file.json")


def test_all_problems_are_reported_together_one_line_each() -> None:
    with pytest.raises(ParamsError) as exc:
        validate_params(
            {"1BAD": 1, "GOOD": 1, "FLOAT": 2.5, "NEST": {}, "uuid": 1, "LIST": [], "A-B": 1.5}
        )
    lines = _problem_lines(exc)
    assert len(lines) == 7  # 1BAD, FLOAT, NEST, LIST, A-B name, A-B value, reserved uuid
    text = "\n".join(lines)
    for key in ("1BAD", "FLOAT", "NEST", "uuid", "LIST", "A-B"):
        assert key in text
    assert "GOOD" not in text


# --- env_value ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "True"),
        (False, "False"),
        (0, "0"),
        (-12, "-12"),
        (10**20, "1" + "0" * 20),
        ("", ""),
        ("x y", "x y"),
        ("True", "True"),
        ("None", "None"),
    ],
)
def test_env_value(value: str | int | bool, text: str) -> None:
    assert env_value(value) == text


def test_null_becomes_the_text_none() -> None:
    assert env_value(validate_params({"N": None})["N"]) == "None"


# --- parse_params_json -------------------------------------------------------------------------


def test_parse_valid_json() -> None:
    text = '{"A": 1, "B": "x", "C": true, "D": null, "E": 4.0}'
    assert parse_params_json(text, source="s") == {"A": 1, "B": "x", "C": True, "D": "None", "E": 4}


def test_parse_accepts_a_bom() -> None:
    assert parse_params_json('\ufeff{"A": 1}', source="s") == {"A": 1}


def test_invalid_json_names_source_line_and_column() -> None:
    with pytest.raises(ParamsError) as exc:
        parse_params_json('{\n  "A": 1,\n  "B": }', source="job.json")
    message = str(exc.value)
    assert message.startswith("job.json is not valid JSON")
    assert "line 3" in message and "column 8" in message


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_rejected(text: str) -> None:
    with pytest.raises(ParamsError, match="s is empty"):
        parse_params_json(text, source="s")


def test_duplicate_keys_are_rejected() -> None:
    with pytest.raises(ParamsError, match=r"repeats the key\(s\) 'A'"):
        parse_params_json('{"A": 1, "B": 2, "A": 3}', source="s")


def test_case_variants_are_not_duplicates() -> None:
    assert parse_params_json('{"a": 1, "A": 2}', source="s") == {"a": 1, "A": 2}


def test_parse_rejects_array_nested_and_reserved() -> None:
    with pytest.raises(ParamsError, match="got a list"):
        parse_params_json("[1, 2]", source="s")
    with pytest.raises(ParamsError, match="'X': nested objects"):
        parse_params_json('{"X": {"Y": 1}}', source="s")
    with pytest.raises(ParamsError, match="HOSTNAME"):
        parse_params_json('{"HOSTNAME": "h"}', source="s")


def test_parse_rejects_non_finite_and_too_long_numbers() -> None:
    with pytest.raises(ParamsError, match="finite"):
        parse_params_json('{"X": NaN}', source="s")
    with pytest.raises(ParamsError, match=r"^s is not usable JSON"):
        parse_params_json('{"X": ' + "9" * 5000 + "}", source="s")


# --- find_key ----------------------------------------------------------------------------------


def test_find_key_ignores_case_and_last_match_wins() -> None:
    params: dict[str, ParamValue] = {"tag": "first", "OTHER": 1, "TAG": "second"}
    assert find_key(params, "TAG") == "second"
    assert find_key(params, "Tag") == "second"
    assert find_key({"Quick_Deploy_Directory": 5}, "QUICK_DEPLOY_DIRECTORY") == "5"
    assert find_key({"TAG": True}, "tag") == "True"
    assert find_key(params, "MISSING") is None
    assert find_key({}, "TAG") is None


# --- properties --------------------------------------------------------------------------------

_names = st.from_regex(re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,12}"), fullmatch=True).filter(
    lambda key: key.upper() not in RESERVED | EXTRA_RESERVED
)
_values = st.one_of(
    st.integers(),
    st.booleans(),
    st.text().filter(lambda s: "\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
)


@given(st.dictionaries(_names, _values, max_size=20))
def test_valid_params_validate_unchanged(params: dict[str, str | int | bool]) -> None:
    assert validate_params(params) == params


@given(st.integers())
def test_env_value_of_ints_round_trips(number: int) -> None:
    assert int(env_value(number)) == number


@given(st.dictionaries(_names, st.integers(), max_size=10))
def test_env_values_parse_back(params: dict[str, int]) -> None:
    validated = validate_params(params)
    assert {k: int(env_value(v)) for k, v in validated.items()} == params


@given(st.sampled_from(ALL_RESERVED), st.data())
def test_reserved_rejected_in_any_casing(name: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    variant = "".join(c.lower() if f else c for c, f in zip(name, flips, strict=True))
    with pytest.raises(ParamsError, match="set by the runtime"):
        validate_params({variant: 1})


# -- environment size limits -------------------------------------------------------------


def test_a_value_over_the_per_variable_limit_is_refused_with_the_limit() -> None:
    fits = "x" * (MAX_ARG_STRLEN - len("DATA=") - 1)
    assert validate_params({"DATA": fits}) == {"DATA": fits}
    with pytest.raises(ParamsError, match=r"131,072 bytes \(128 KiB\) per variable"):
        validate_params({"DATA": fits + "x"})


def test_a_multibyte_value_is_measured_in_bytes() -> None:
    with pytest.raises(ParamsError, match="per variable"):
        validate_params({"DATA": "é" * (MAX_ARG_STRLEN // 2)})


def test_an_environment_over_the_total_limit_is_refused() -> None:
    piece = "x" * 100_000
    count = env_total_limit() // 100_000 + 1
    with pytest.raises(ParamsError, match=r"in all; this host allows [\d,]+ bytes"):
        validate_params({f"P{i}": piece for i in range(count)})


def test_payload_env_counts_against_the_total() -> None:
    params = validate_params({"A": "x" * 100_000})
    env = {f"E{i}": "y" * 100_000 for i in range(env_total_limit() // 100_000)}
    with pytest.raises(ParamsError, match="in all"):
        check_env_size(params, env)
    check_env_size(params, {"E": "small"})


def test_the_total_limit_keeps_a_margin_under_arg_max() -> None:
    assert env_total_limit() == os.sysconf("SC_ARG_MAX") - RUNTIME_ENV_MARGIN
