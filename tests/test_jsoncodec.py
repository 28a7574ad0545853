"""jsoncodec gives json's results and json's errors: in the binary through the C codec without
importing json, anywhere else through json."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_kubelet import jsoncodec, pinned
from ecr_kubelet.wire import reject_duplicate_keys


@pytest.fixture(scope="module", params=["binary", "elsewhere"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs as in the binary (the C codec, the interpreter pinned) and as anywhere else."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pinned, "python", lambda: request.param == "binary")
        importlib.reload(jsoncodec)
        assert (request.param == "binary") == jsoncodec.HAVE_C_CODEC
        yield request.param
    importlib.reload(jsoncodec)

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
def test_loads_agrees_with_json_on_any_text(path: str, text: str) -> None:
    assert outcome(jsoncodec.loads, text) == outcome(json.loads, text)
    hooked = outcome(jsoncodec.loads, text, object_pairs_hook=reject_duplicate_keys)
    assert hooked == outcome(json.loads, text, object_pairs_hook=reject_duplicate_keys)


@given(values, st.booleans(), st.booleans(), st.booleans())
def test_dumps_agrees_with_json(path: str, value: Any, sort_keys: bool, ensure_ascii: bool, compact: bool) -> None:
    expected = json.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                          separators=(",", ":") if compact else None)
    assert jsoncodec.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii, compact=compact) == expected


def test_specials_and_unserializable_values_are_json_s(path: str) -> None:
    assert math.isnan(jsoncodec.loads("NaN")) and jsoncodec.loads(" -Infinity ") == float("-inf")
    assert jsoncodec.dumps([float("inf")]) == json.dumps([float("inf")])
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsoncodec.dumps({"when": object()})
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        jsoncodec.loads('{"a": 1} {"b": 2}')


def run_fresh(code: str, recorded_python: str) -> str:
    """Run `code` in a new interpreter, where json is not loaded yet, as the frozen binary whose build
    recorded `recorded_python` as its interpreter."""
    prelude = textwrap.dedent(f"""
        import sys, types
        sys.frozen = True
        build_info = types.ModuleType("ecr_kubelet._build_info")
        build_info.PINNED = {{"python": {recorded_python!r}}}
        sys.modules[build_info.__name__] = build_info
        from ecr_kubelet import jsoncodec
        assert 'json' not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": ":".join(sys.path)})
    return result.stdout.strip()


ROUND_TRIP = ("assert jsoncodec.loads(jsoncodec.dumps({'a': [1, 2.5, None, 'é']})) == {'a': [1, 2.5, None, 'é']}\n"
              "print(jsoncodec.HAVE_C_CODEC, sorted(m for m in ('json', 're') if m in sys.modules))")


def test_in_the_binary_valid_input_does_not_import_json() -> None:
    assert run_fresh(ROUND_TRIP, sys.version) == "True []"


def test_on_another_interpreter_than_the_recorded_one_it_is_json() -> None:
    assert run_fresh(ROUND_TRIP, sys.version + " (another build)") == "False ['json', 're']"


@pytest.mark.parametrize("text", ['{"a": 1', '{"a": 1} x', "[1,]", '"\\x"', "", "{\"a\": \"\x01\"}"])
def test_errors_before_json_is_loaded_are_json_s(text: str) -> None:
    code = f"try:\n    jsoncodec.loads({text!r})\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    expected = outcome(json.loads, text)
    assert run_fresh(code, sys.version) == f"{expected[0]} {expected[1]}"
