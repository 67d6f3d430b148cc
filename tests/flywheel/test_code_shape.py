"""Every function in ``flywheel/`` reads in a screenful: at most 60 lines."""

import ast
from pathlib import Path

import flywheel

MAX_LINES = 60
ROOT = Path(flywheel.__file__).resolve().parent


def long_functions(root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    """``file:line name (N lines)`` for every function or method over ``limit`` lines (decorators included)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_flywheel_is_over_60_lines():
    too_long = long_functions()
    assert not too_long, f"functions over {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_the_check_finds_a_long_function(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * 70)
    assert long_functions(tmp_path) == [f"{tmp_path.name}/long.py:1 f (71 lines)"]
