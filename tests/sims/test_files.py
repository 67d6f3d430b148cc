"""``sims.files``: what every crash-safe write and checksum in the project relies on, and a
guard that no second copy of them comes back."""

import ast
import hashlib
import json
import os
from pathlib import Path

import pytest

from sims.files import (
    atomic_directory,
    atomic_path,
    sha256_bytes,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
)

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("sims", "policies", "world_model", "flywheel", "configs", "benchmarks", "scripts")
HOME = Path("sims/files.py")
GUARDED = {("os", "replace"), ("os", "rename"), ("hashlib", "sha256")}


@pytest.fixture(params=[0o077, 0o022, 0o000], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_files_are_0644_whatever_the_umask(tmp_path, umask):
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    write_json_atomic(tmp_path / "sub" / "a.json", {"k": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        Path(tmp).unlink()  # libraries may replace the temp file rather than write into it
        Path(tmp).write_bytes(b"y")
    assert [_mode(p) for p in (tmp_path / "a.bin", tmp_path / "sub" / "a.json", tmp_path / "b.bin")] == [0o644] * 3
    assert (tmp_path / "b.bin").read_bytes() == b"y"


def test_json_bytes_are_indent_2_with_a_final_newline(tmp_path):
    payload = {"b": [1, 2], "a": {"x": None}}
    write_json_atomic(tmp_path / "p.json", payload)
    assert (tmp_path / "p.json").read_bytes() == (json.dumps(payload, indent=2) + "\n").encode()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(b"half of the new")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_failed_directory_keeps_the_old_one_and_leaves_no_staging(tmp_path):
    final = tmp_path / "cycle-000001"
    final.mkdir()
    (final / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as staging:
            (staging / "f").write_text("new")
            raise RuntimeError
    assert (final / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle-000001"]
    with atomic_directory(final) as staging:
        (staging / "g").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle-000001"]


def test_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # over the 1 MiB block, so more than one read
    (tmp_path / "d").write_bytes(data)
    assert sha256_file(tmp_path / "d") == hashlib.sha256(data).hexdigest() == sha256_bytes(data)
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _offenders(path: Path, rel: Path) -> list[str]:
    found = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, f"{where}.{child.name}" if where else child.name)
                continue
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and isinstance(child.func.value, ast.Name)
                    and (child.func.value.id, child.func.attr) in GUARDED):
                found.append(f"{rel}:{where or '<module>'} calls {child.func.value.id}.{child.func.attr}")
            if isinstance(child, ast.ImportFrom) and any((child.module, a.name) in GUARDED for a in child.names):
                found.append(f"{rel}:{where or '<module>'} imports {child.module}.{child.names[0].name} directly")
            visit(child, where)

    visit(ast.parse(path.read_text(), str(path)), "")
    return found


def test_only_sims_files_renames_into_place_or_hashes():
    """A second atomic write or sha256 helper would drift from this one (fsync, mode, block size)."""
    offenders = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel != HOME:
                offenders += _offenders(path, rel)
    assert not offenders, "use sims.files instead:\n" + "\n".join(offenders)


def test_a_figure_is_written_as_a_png_with_the_files_mode_and_closed(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sims.files import write_figure_atomic

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = write_figure_atomic(tmp_path / "figure.png", fig, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (path.stat().st_mode & 0o777) == 0o644
    assert not plt.fignum_exists(fig.number)


def test_exclusive_makes_a_second_process_wait_until_the_first_is_done(tmp_path):
    """Two runs of a parallel sweep about to make one starter checkpoint: the second waits for the
    first's lock (and would then find the checkpoint) rather than make it at the same time."""
    import subprocess
    import sys
    import time

    from sims.files import exclusive

    target, order = tmp_path / "checkpoint", tmp_path / "order.txt"
    waiter = ("import sys; from sims.files import exclusive\n"
              f"with exclusive({str(target)!r}):\n"
              f"    open({str(order)!r}, 'a').write('second\\n')\n")
    with exclusive(target):
        proc = subprocess.Popen([sys.executable, "-c", waiter])
        time.sleep(1.0)  # long enough for the child to start and block on the lock
        assert proc.poll() is None and not order.exists()
        order.write_text("first\n")
    assert proc.wait(timeout=30) == 0
    assert order.read_text() == "first\nsecond\n"
