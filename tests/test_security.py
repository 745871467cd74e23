"""What memstate's own code may not do, checked on its source: no pickle on any load path, no
shell, no eval. Runs over harness/, impls/ and the benchmarks, so a new file is covered too."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

SOURCES = sorted(p for d in ("harness", "impls", "benchmarks") for p in (ROOT / d).rglob("*.py"))
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def dotted(node: ast.AST) -> str:
    """'np.load' for np.load, '' for anything that is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def problems(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in PICKLING_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        where = f"line {node.lineno}: {name}"
        if name in ("eval", "exec", "os.system", "os.popen", "compile"):
            found.append(f"{where} runs a string as code or a shell command")
        if name in ("np.load", "numpy.load"):
            v = keyword(node, "allow_pickle")
            if not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"{where} without allow_pickle=False")
        if name == "torch.load":
            v = keyword(node, "weights_only")
            if not (isinstance(v, ast.Constant) and v.value is True):
                found.append(f"{where} without weights_only=True")
        if name.startswith("subprocess.") and name.split(".")[-1] in SUBPROCESS_CALLS:
            v = keyword(node, "shell")
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"{where} with shell=")
            if name.split(".")[-1] in ("getoutput", "getstatusoutput"):
                found.append(f"{where} always uses a shell")
            if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                found.append(f"{where} with a command string instead of a list of arguments")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_pickle_no_shell_no_eval(path):
    assert problems(ast.parse(path.read_text(), str(path))) == []


@pytest.mark.parametrize("code, complaint", [
    ("import pickle", "imports pickle"),
    ("from joblib import load", "imports joblib"),
    ("np.load(f)", "np.load without allow_pickle=False"),
    ("numpy.load(f, allow_pickle=True)", "numpy.load without allow_pickle=False"),
    ("torch.load(f)", "torch.load without weights_only=True"),
    ("subprocess.run(cmd, shell=True)", "subprocess.run with shell="),
    ("subprocess.Popen('ls -l')", "subprocess.Popen with a command string"),
    ("subprocess.check_output(f'ls {x}')", "subprocess.check_output with a command string"),
    ("os.system('x')", "os.system runs a string"),
    ("eval(s)", "eval runs a string"),
])
def test_the_checker_finds_each_pattern(code, complaint):
    """The scan above passes only because the code is clean, not because it sees nothing."""
    found = problems(ast.parse(code))
    assert len(found) == 1 and complaint in found[0], found


def test_the_checker_accepts_the_safe_forms():
    safe = ("np.load(f, allow_pickle=False)\ntorch.load(f, weights_only=True)\n"
            "subprocess.run(['ls', '-l'], check=False)\nsubprocess.Popen(args, shell=False)\n")
    assert problems(ast.parse(safe)) == []
