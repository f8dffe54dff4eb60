"""Every public function's and class's documented parameters are its signature's, and a default
the docstring states ("default 5", "(default: 5)") is the signature's default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "deconfoundlm"
SECTION_END = re.compile(r"\n(Returns|Raises|Yields|Examples|Notes|Attributes|See Also)\n")
ENTRY = re.compile(r"^(\w[\w, ]*?) :(.*)$")
# a stated default that is a literal: a number or a quoted / code-quoted string
DEFAULT = re.compile(r"default:?\s+(-?\d[\d.e+-]*|``[^`]+``|'[^']+'|\"[^\"]+\")")


def documented(doc: str) -> dict[str, str]:
    """{parameter: its entry's text} of a numpydoc Parameters section."""
    section = SECTION_END.split(doc.split("Parameters\n", 1)[1])[0]
    out: dict[str, str] = {}
    current: list[str] = []
    for line in section.splitlines():
        m = ENTRY.match(line)
        if m:
            current = [n.strip() for n in m.group(1).split(",")]
            for n in current:
                out[n] = m.group(2)
        elif current:
            for n in current:
                out[n] += " " + line.strip()
    return out


def literal(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    return value if isinstance(value, str) else repr(value)


def cases():
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                doc = ast.get_docstring(node) or ""
                if "Parameters\n" in doc:
                    yield pytest.param(node, doc, id=f"{path.relative_to(ROOT)}:{node.name}")


@pytest.mark.parametrize(("node", "doc"), list(cases()))
def test_docstring_matches_the_signature(node, doc):
    fn = node
    if isinstance(node, ast.ClassDef):
        fn = next((b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"), None)
    if fn is None:  # a dataclass: its annotated fields (not ClassVars) are the constructor's parameters
        fields = [b for b in node.body if isinstance(b, ast.AnnAssign) and "ClassVar" not in ast.unparse(b.annotation)]
        params = [b.target.id for b in fields]
        defaults = {b.target.id: b.value for b in fields if b.value is not None}
    else:
        a = fn.args
        positional = a.posonlyargs + a.args
        defaults = dict(zip([x.arg for x in positional][len(positional) - len(a.defaults):], a.defaults, strict=True))
        defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None})
        params = [x.arg for x in positional + a.kwonlyargs if x.arg not in ("self", "cls")]
    docs = documented(doc)
    assert set(docs) == set(params), f"undocumented {sorted(set(params) - set(docs))}, " \
                                     f"not parameters {sorted(set(docs) - set(params))}"
    for name, text in docs.items():
        said = DEFAULT.search(text)
        real = literal(defaults.get(name))
        if not said or real is None or real == "None":  # None: a default computed in the body
            continue
        value = said.group(1).strip("`'\"")
        try:
            assert float(value) == float(real), (name, said.group(0), real)
        except ValueError:
            assert value == real, (name, said.group(0), real)


def test_the_checker_reads_numpydoc():
    doc = "x\n\nParameters\n----------\na, b : int, default 3\n    Things.\nc : str\n    More (default: 'x').\n\nReturns\n"
    assert documented(doc) == {"a": " int, default 3 Things.", "b": " int, default 3 Things.", "c": " str More (default: 'x')."}
