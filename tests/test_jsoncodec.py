"""jsoncodec gives json's results and json's errors, through the C codec without importing json."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_kubelet import jsoncodec
from ecr_kubelet.wire import reject_duplicate_keys

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
texts = st.one_of(
    values.map(json.dumps),
    values.map(lambda v: " \n" + json.dumps(v, indent=1) + "\t\r "),
    st.text(alphabet=' \t\n{}[]":,0123456789.eE+-truefalsnlNaIiy\\u\x00\ufeffé', max_size=40),
)


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        result = call(*args, **kwargs)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", json.dumps(result, sort_keys=True)  # NaN-safe comparison of the decoded value


@given(texts)
def test_loads_agrees_with_json_on_any_text(text: str) -> None:
    assert outcome(jsoncodec.loads, text) == outcome(json.loads, text)
    hooked = outcome(jsoncodec.loads, text, object_pairs_hook=reject_duplicate_keys)
    assert hooked == outcome(json.loads, text, object_pairs_hook=reject_duplicate_keys)


@given(values, st.booleans(), st.booleans(), st.booleans())
def test_dumps_agrees_with_json(value: Any, sort_keys: bool, ensure_ascii: bool, compact: bool) -> None:
    expected = json.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                          separators=(",", ":") if compact else None)
    assert jsoncodec.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii, compact=compact) == expected


def test_specials_and_unserializable_values_are_json_s() -> None:
    assert math.isnan(jsoncodec.loads("NaN")) and jsoncodec.loads(" -Infinity ") == float("-inf")
    assert jsoncodec.dumps([float("inf")]) == json.dumps([float("inf")])
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsoncodec.dumps({"when": object()})
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        jsoncodec.loads('{"a": 1} {"b": 2}')


def run_fresh(code: str) -> str:
    """Run `code` in a new interpreter, where json is not loaded yet."""
    prelude = "import sys\nfrom ecr_kubelet import jsoncodec\nassert 'json' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": ":".join(sys.path)})
    return result.stdout.strip()


def test_valid_input_does_not_import_json() -> None:
    code = ("assert jsoncodec.loads(jsoncodec.dumps({'a': [1, 2.5, None, 'é']})) == {'a': [1, 2.5, None, 'é']}\n"
            "print(sorted(m for m in ('json', 're') if m in sys.modules))")
    assert run_fresh(code) == "[]"


@pytest.mark.parametrize("text", ['{"a": 1', '{"a": 1} x', "[1,]", '"\\x"', "", "{\"a\": \"\x01\"}"])
def test_errors_before_json_is_loaded_are_json_s(text: str) -> None:
    code = f"try:\n    jsoncodec.loads({text!r})\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    expected = outcome(json.loads, text)
    assert run_fresh(code) == f"{expected[0]} {expected[1]}"
