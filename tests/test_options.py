"""The one options checker (`fedmllm.options`): every branch of check_value / check_type /
resolve_options, and its use by tuning methods and the config."""

import math

import pytest

from fedmllm.errors import UserError
from fedmllm.options import check_type, check_value, resolve_options

OWNER = "tuning method 'x' option"


def _error(fn, *args) -> str:
    with pytest.raises(UserError) as err:
        fn(*args)
    return str(err.value)


# -- check_value: one branch per kind of default ------------------------------------------------
def test_bool_default_takes_bools_only():
    assert check_value(OWNER, "flag", False, True) is False
    assert _error(check_value, OWNER, "flag", 1, True) == "tuning method 'x' option 'flag' must be bool, got int 1"
    assert "must be bool" in _error(check_value, OWNER, "flag", "true", True)


def test_int_default_takes_ints_not_bools_or_floats():
    out = check_value(OWNER, "r", 16, 8)
    assert out == 16 and type(out) is int
    assert _error(check_value, OWNER, "r", True, 8) == "tuning method 'x' option 'r' must be int, got bool True"
    assert _error(check_value, OWNER, "r", 8.0, 8) == "tuning method 'x' option 'r' must be int, got float 8.0"
    assert _error(check_value, OWNER, "r", "8", 8) == "tuning method 'x' option 'r' must be int, got str '8'"


def test_float_default_takes_numbers_and_converts_ints():
    out = check_value(OWNER, "alpha", 32, 16.0)
    assert out == 32.0 and type(out) is float
    out = check_value(OWNER, "alpha", 0.5, 16.0)
    assert out == 0.5 and type(out) is float
    assert "'alpha' must be float, got bool False" in _error(check_value, OWNER, "alpha", False, 16.0)
    assert "'alpha' must be float, got str '1.0'" in _error(check_value, OWNER, "alpha", "1.0", 16.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("default", [16.0, None])
def test_non_finite_numbers_are_rejected(bad, default):
    msg = _error(check_value, OWNER, "alpha", bad, default)
    assert msg == f"tuning method 'x' option 'alpha' must be a finite number, got {bad!r}"


def test_str_default_takes_strs():
    assert check_value(OWNER, "targets", "all", "llm") == "all"
    assert _error(check_value, OWNER, "targets", 1, "llm") == "tuning method 'x' option 'targets' must be str, got int 1"


def test_none_default_means_number_or_none():
    assert check_value(OWNER, "beta", None, None) is None
    out = check_value(OWNER, "beta", 3, None)
    assert out == 3 and type(out) is int  # kept as given, not converted
    assert check_value(OWNER, "beta", 0.25, None) == 0.25
    assert _error(check_value, OWNER, "beta", True, None) == \
        "tuning method 'x' option 'beta' must be a number or None, got bool True"
    assert "must be a number or None, got str 'a'" in _error(check_value, OWNER, "beta", "a", None)


def test_other_defaults_take_their_type():
    assert check_value(OWNER, "layers", [1, 2], []) == [1, 2]
    assert _error(check_value, OWNER, "layers", (1, 2), []) == \
        "tuning method 'x' option 'layers' must be list, got tuple (1, 2)"


# -- check_type: the same rules against a type (config's type hints) ---------------------------
def test_check_type_matches_check_value():
    out = check_type("config key", "train.lr", 1, float)
    assert out == 1.0 and type(out) is float
    assert check_type("config key", "train.steps", 3, int) == 3
    assert _error(check_type, "config key", "train.steps", "abc", int) == \
        "config key 'train.steps' must be int, got str 'abc'"
    assert _error(check_type, "config key", "model.pretrained", 0, bool) == \
        "config key 'model.pretrained' must be bool, got int 0"
    assert _error(check_type, "config key", "train.lr", math.inf, float) == \
        "config key 'train.lr' must be a finite number, got inf"


# -- resolve_options ---------------------------------------------------------------------------
DEFAULTS = {"r": 8, "alpha": 16.0, "targets": "llm", "beta": None}


def test_resolve_fills_defaults_in_declaration_order():
    out = resolve_options("tuning method 'x'", {"targets": "all", "alpha": 4}, DEFAULTS)
    assert out == {"r": 8, "alpha": 4.0, "targets": "all", "beta": None}
    assert list(out) == ["r", "alpha", "targets", "beta"] and type(out["alpha"]) is float


def test_resolve_none_or_empty_is_a_fresh_copy_of_the_defaults():
    for given in (None, {}):
        out = resolve_options("tuning method 'x'", given, DEFAULTS)
        assert out == DEFAULTS and out is not DEFAULTS
    out["r"] = 99
    assert DEFAULTS["r"] == 8


def test_resolve_unknown_key_names_valid_options_and_close_match():
    msg = _error(resolve_options, "tuning method 'x'", {"alhpa": 1.0}, DEFAULTS)
    assert msg == ("unknown option 'alhpa' (did you mean 'alpha'?) for tuning method 'x'; "
                   "valid options: r, alpha, targets, beta")


def test_resolve_unknown_keys_without_close_match():
    msg = _error(resolve_options, "strategy 'y'", {"zzz": 1, "qqq": 2}, DEFAULTS)
    assert msg == "unknown options 'zzz', 'qqq' for strategy 'y'; valid options: r, alpha, targets, beta"
    assert "did you mean" not in msg


def test_resolve_with_no_options_says_none():
    assert _error(resolve_options, "tuning method 'full_st'", {"k": 2}, {}) == \
        "unknown option 'k' for tuning method 'full_st'; valid options: (none)"
    assert resolve_options("tuning method 'full_st'", None, {}) == {}


def test_resolve_checks_each_value_naming_owner_and_key():
    assert _error(resolve_options, "tuning method 'x'", {"r": "8"}, DEFAULTS) == \
        "tuning method 'x' option 'r' must be int, got str '8'"
    assert _error(resolve_options, "tuning method 'x'", {"alpha": math.nan}, DEFAULTS) == \
        "tuning method 'x' option 'alpha' must be a finite number, got nan"


def test_resolve_rejects_a_non_table():
    assert _error(resolve_options, "tuning method 'x'", [("r", 8)], DEFAULTS) == \
        "options of tuning method 'x' must be a table, got [('r', 8)]"


# -- used by tuning methods --------------------------------------------------------------------
def test_tuning_methods_use_the_checker():
    from fedmllm.methods import make_method

    method = make_method("lora", {"alpha": 32, "r": 4})
    assert method.options.alpha == 32.0 and type(method.options.alpha) is float and method.options.r == 4
    with pytest.raises(UserError, match="tuning method 'lora' option 'dropout' must be a finite number, got nan"):
        make_method("lora", {"dropout": math.nan})
    with pytest.raises(UserError, match="'alhpa' \\(did you mean 'alpha'\\?\\) for tuning method 'lora'"):
        make_method("lora", {"alhpa": 8})
