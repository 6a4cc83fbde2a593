"""The core must not know about Faust or Kafka: it runs offline in replay."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "src" / "driftline" / "core"
FORBIDDEN = ("faust", "aiokafka", "kafka", "mode", "driftline.streaming", "driftline.bridges")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_neither_faust_nor_kafka():
    files = sorted(CORE.glob("**/*.py"))
    assert len(files) >= 8, "the core package moved?"
    offenders = {
        f"{f.name}: {name}"
        for f in files
        for name in _imports(f)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offenders


def test_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from faust import App\nimport aiokafka.errors\n")
    assert {"faust", "aiokafka.errors"} <= _imports(bad)
