"""The checks: what the vllm engine and its stand-in use of vLLM, and what vLLM's LLaVA-NeXT loader reads from a
model directory, against one release's source."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

from serving.engines.vllm_contract.source import VLLMSource

ENGINE = Path(__file__).resolve().parents[1] / "vllm_engine.py"
STANDIN = Path(__file__).resolve().parent / "standin.py"
ERROR_MODULES = ("vllm.exceptions", "vllm.v1.engine.exceptions")
# The types of the engine's attribute chains: (vLLM class, attribute) -> the attribute's class.
CHAIN_TYPES = {
    ("AsyncLLM", "model_config"): ("vllm.config.model", "ModelConfig"),
    ("AsyncLLM", "vllm_config"): ("vllm.config.vllm", "VllmConfig"),
    ("AsyncLLM", "renderer"): ("vllm.renderers.base", "BaseRenderer"),
    ("VllmConfig", "scheduler_config"): ("vllm.config.scheduler", "SchedulerConfig"),
    ("VllmConfig", "model_config"): ("vllm.config.model", "ModelConfig"),
}
# Stand-in classes -> the vLLM classes they stand for (exceptions are found by name in ERROR_MODULES).
STANDIN_CLASSES = {
    "AsyncEngineArgs": ("vllm", "AsyncEngineArgs"),
    "SamplingParams": ("vllm", "SamplingParams"),
    "CompletionOutput": ("vllm.outputs", "CompletionOutput"),
    "RequestOutput": ("vllm.outputs", "RequestOutput"),
    "ModelConfig": ("vllm.config.model", "ModelConfig"),
    "SchedulerConfig": ("vllm.config.scheduler", "SchedulerConfig"),
    "VllmConfig": ("vllm.config.vllm", "VllmConfig"),
    "BaseRenderer": ("vllm.renderers.base", "BaseRenderer"),
    "AsyncLLM": ("vllm.v1.engine.async_llm", "AsyncLLM"),
}
STANDIN_OWN = {"Script"}  # the stand-in's test controls, not vLLM's
LOADER_MODULES = ("vllm.model_executor.models.llava_next", "vllm.model_executor.models.llava")
SUB_CONFIGS = ("vision_config", "text_config")
PINNED = ("transformers", "pillow", "torch")  # the project's pins a shared environment must satisfy


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str


@dataclass
class Report:
    version: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, ok: bool, detail: str) -> None:
        self.findings.append(Finding(check, ok, detail))

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]


def check_engine(src: VLLMSource, report: Report, engine: Path = ENGINE) -> None:
    """Every `self.vllm.X`, argument of `AsyncEngineArgs(...)` / `SamplingParams(...)`, `self.engine...` chain
    and member of an annotated vLLM object in the engine exists in the release."""
    tree = ast.parse(engine.read_text())
    imported = _vllm_imports(tree)
    chains: dict[tuple[str, ...], int] = {}
    for node in ast.walk(tree):
        if _is_self_attr(node, "vllm"):
            cls = src.resolve("vllm", node.attr)
            report.add("export", cls is not None, f"vllm.{node.attr} (line {node.lineno})")
        if isinstance(node, ast.Call) and _is_self_attr(node.func, "vllm"):
            members = src.members("vllm", node.func.attr)
            for kw in node.keywords:
                report.add(
                    "argument", kw.arg in members, f"{node.func.attr}({kw.arg}=...) (line {node.lineno})"
                )
        if isinstance(node, ast.Attribute) and _is_self_attr(node.value, "vllm"):
            ok = node.attr in src.members("vllm", node.value.attr)
            report.add("method", ok, f"vllm.{node.value.attr}.{node.attr} (line {node.lineno})")
        if isinstance(node, ast.Attribute):
            chain, base = _unchain(node)
            if base == "self" and chain[0] == "engine" and len(chain) > 1:
                chains.setdefault(tuple(chain[1:]), node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            _check_annotated(src, report, node, imported)
    for chain, line in chains.items():
        if not any(other[: len(chain)] == chain and other != chain for other in chains):
            _check_chain(src, report, chain, line)
    errors = _dict_keys(tree, "VLLM_ERRORS")
    for name in errors:
        ok = any(src.resolve(m, name) for m in ERROR_MODULES)
        report.add("exception", ok, f"{name} in {' or '.join(ERROR_MODULES)}")
    reasons = set(src.constant("vllm.v1.engine", "FINISH_REASON_STRINGS") or ())
    handled = set(_dict_keys(tree, "FINISH_REASONS")) | set(_dict_keys(tree, "FINISH_ERRORS"))
    report.add(
        "finish reasons",
        bool(reasons) and reasons == handled,
        f"vLLM's {sorted(reasons)}; the engine handles {sorted(handled)}",
    )


def check_standin(src: VLLMSource, report: Report, standin: Path = STANDIN) -> None:
    """The stand-in's classes have only members, and exceptions only bases, that the vLLM classes have."""
    tree = ast.parse(standin.read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name not in STANDIN_OWN):
        if cls.name in STANDIN_CLASSES:
            real = src.members(*STANDIN_CLASSES[cls.name])
            for name in sorted(_own_members(cls)):
                report.add(
                    "stand-in", name in real, f"{cls.name}.{name} is in vLLM's {STANDIN_CLASSES[cls.name][1]}"
                )
            continue
        module = next((m for m in ERROR_MODULES if src.resolve(m, cls.name)), None)
        bases = {b.id for b in cls.bases if isinstance(b, ast.Name)}
        real_bases = src.base_names(module, cls.name) if module else set()
        ok = module is not None and bases <= real_bases
        report.add("stand-in", ok, f"exception {cls.name}({', '.join(sorted(bases))}) matches vLLM's")


def check_model_dir(src: VLLMSource, report: Report, model_dir: Path) -> None:
    """Every config field vLLM's LLaVA-NeXT loader reads (`config.x`, `hf_config.vision_config.y`, ...) is
    written in `model_dir`'s config.json (by `assistant.modeling.save_model`). Written, not defaulted: `vllm
    serve` may run in vLLM's own environment, whose transformers can default a field differently."""
    written = json.loads((Path(model_dir) / "config.json").read_text())
    for path in sorted(_config_reads(src)):
        raw = written
        for part in path[:-1]:
            raw = raw.get(part) if isinstance(raw, dict) else None
        ok = isinstance(raw, dict) and path[-1] in raw
        report.add("config", ok, f"{'.'.join(path)} {'is written' if ok else 'is not in config.json'}")


def check_requirements(src: VLLMSource, report: Report) -> None:
    """vLLM's requirements on the packages this project pins accept the versions installed here."""
    for line in src.requires:
        req = Requirement(line)
        if req.name.lower() not in PINNED or req.marker is not None:
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            continue
        ok = req.specifier.contains(installed, prereleases=True)
        report.add("requirement", ok, f"vLLM requires {line}; installed {req.name} {installed}")


def run_checks(src: VLLMSource, model_dir: Path | None) -> Report:
    report = Report(src.version)
    check_engine(src, report)
    check_standin(src, report)
    if model_dir is not None:
        check_model_dir(src, report, model_dir)
    check_requirements(src, report)
    return report


# --- ast helpers ---------------------------------------------------------------------------------------------


def _is_self_attr(node: ast.AST, attr: str) -> bool:
    """`self.<attr>.X`: node is the Attribute X whose value is `self.<attr>`."""
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == attr
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    )


def _check_chain(src: VLLMSource, report: Report, chain: tuple[str, ...], line: int) -> None:
    """`self.engine.a.b...`: each step a member of the class the previous one is (as far as CHAIN_TYPES know)."""
    owner: tuple[str, str] | None = ("vllm.v1.engine.async_llm", "AsyncLLM")
    path = "self.engine"
    for attr in chain:
        if owner is None:
            return
        ok = attr in src.members(*owner)
        report.add("method", ok, f"{path}.{attr} is in vLLM's {owner[1]} (line {line})")
        path += "." + attr
        owner = CHAIN_TYPES.get((owner[1], attr))


def _vllm_imports(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """Names imported from vllm (under TYPE_CHECKING) -> (module, class)."""
    return {
        alias.asname or alias.name: (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vllm")
        for alias in node.names
    }


def _annotation_types(node: ast.expr | None, imported: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(node, ast.BinOp):  # A | B
        return _annotation_types(node.left, imported) + _annotation_types(node.right, imported)
    if isinstance(node, ast.Name) and node.id in imported:
        return [imported[node.id]]
    return []


def _check_annotated(src: VLLMSource, report: Report, func: ast.AST, imported: dict) -> None:
    """In a function, `x.attr` and `x["key"]` where x is a parameter or local annotated with vLLM classes."""
    args = func.args.args + func.args.kwonlyargs
    local = {a.arg: _annotation_types(a.annotation, imported) for a in args}
    for node in ast.walk(func):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            local[node.target.id] = _annotation_types(node.annotation, imported)
    local = {k: v for k, v in local.items() if v}
    for node in ast.walk(func):
        name, member = None, None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name, member = node.value.id, node.attr
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                name, member = node.value.id, key.value
        for owner in local.get(name, []):
            ok = member in src.members(*owner)
            report.add("member", ok, f"{name}.{member} is in vLLM's {owner[1]} (line {node.lineno})")


def _dict_keys(tree: ast.Module, name: str) -> list[str]:
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        targets = node.targets if isinstance(node, ast.Assign) else [target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(
            node.value, ast.Dict
        ):
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
    return []


def _own_members(cls: ast.ClassDef) -> set[str]:
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in cls.body:
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and node in cls.body and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.add(t.attr)
    return {n for n in names if not n.startswith("_")}


def _config_reads(src: VLLMSource) -> set[tuple[str, ...]]:
    """Attribute reads on the HF config in vLLM's LLaVA(-NeXT) loader: `config.x`, `hf_config.vision_config.y`,
    `self.config.x`. Reads that allow absence are not counted: `getattr(config, "x", d)`, and `config.x is None`
    tests (vLLM fills such a field in itself, e.g. `text_config.architectures` from its model type)."""
    reads: set[tuple[str, ...]] = set()
    for dotted in LOADER_MODULES:
        tree = src.module(dotted)
        tested = {
            id(node.left)
            for node in (ast.walk(tree) if tree else [])
            if isinstance(node, ast.Compare)
            and isinstance(node.ops[0], (ast.Is, ast.IsNot))
            and isinstance(node.comparators[0], ast.Constant)
            and node.comparators[0].value is None
        }
        for node in ast.walk(tree) if tree else []:
            if (
                not isinstance(node, ast.Attribute)
                or not isinstance(node.ctx, ast.Load)
                or id(node) in tested
            ):
                continue
            chain, base = _unchain(node)
            root = chain[0] if chain else None
            if base == "self" and root == "config":
                chain = chain[1:]
            elif base not in ("config", "hf_config"):
                continue
            if not chain:
                continue
            path = tuple(chain[:2]) if chain[0] in SUB_CONFIGS and len(chain) > 1 else (chain[0],)
            reads.add(path)
    return reads


def _unchain(node: ast.Attribute) -> tuple[list[str], str | None]:
    """`a.b.c` -> (["b", "c"], "a")."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return list(reversed(parts)), node.id if isinstance(node, ast.Name) else None
