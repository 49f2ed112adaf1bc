"""vLLM's Python source read from its wheel (never imported): modules, classes and their members, by `ast`."""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from assistant.errors import ConfigError


@dataclass
class VLLMSource:
    """The `vllm/` package of one release: read from a wheel in place, or from an unpacked directory."""

    root: Path
    version: str
    requires: list[str]
    _zip: zipfile.ZipFile | None = None
    _modules: dict[str, ast.Module | None] = field(default_factory=dict)
    _packages: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, wheel_dir: str | Path, version: str) -> VLLMSource:
        """The wheel `vllm-{version}-*.whl` in `wheel_dir`, or an unpacked wheel (a directory holding `vllm/`)."""
        path = Path(wheel_dir)
        wheels = sorted(path.glob(f"vllm-{version}-*.whl")) if path.is_dir() else [path]
        if wheels and wheels[0].suffix == ".whl" and wheels[0].is_file():
            archive = zipfile.ZipFile(wheels[0])
            metadata = archive.read(f"vllm-{version}.dist-info/METADATA").decode()
            return cls(wheels[0], version, _requires(metadata), _zip=archive)
        meta = path / f"vllm-{version}.dist-info" / "METADATA"
        if (path / "vllm" / "__init__.py").is_file() and meta.is_file():
            return cls(path, version, _requires(meta.read_text()))
        raise ConfigError(
            f"no vLLM {version} wheel or unpacked wheel in {path}; fetch it with "
            f"`pip download vllm=={version} --no-deps -d {path}`"
        )

    def read(self, relpath: str) -> str | None:
        if self._zip is not None:
            try:
                return self._zip.read(relpath).decode()
            except KeyError:
                return None
        file = self.root / relpath
        return file.read_text() if file.is_file() else None

    def module(self, dotted: str) -> ast.Module | None:
        """The parsed module `vllm.x.y` (a file or a package's __init__), or None if the release lacks it."""
        if dotted not in self._modules:
            base = dotted.replace(".", "/")
            text = self.read(base + ".py")
            if text is None and (text := self.read(base + "/__init__.py")) is not None:
                self._packages.add(dotted)
            self._modules[dotted] = None if text is None else ast.parse(text)
        return self._modules[dotted]

    def resolve(self, dotted: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef] | None:
        """The class that `name` is in module `dotted`, following imports, aliases (`A = B`) and vllm's lazy
        `MODULE_ATTRS` table."""
        tree = self.module(dotted)
        if tree is None or depth > 8:
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return dotted, node
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
                if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    return self.resolve(dotted, node.value.id, depth + 1)
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "MODULE_ATTRS" for t in node.targets
            ):
                target = _lazy_target(node.value, name, dotted)
                if target is not None:
                    return self.resolve(*target, depth + 1)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        module = _absolute(dotted, node, dotted in self._packages)
                        return self.resolve(module, alias.name, depth + 1)
        return None

    def members(self, dotted: str, name: str) -> set[str]:
        """Every name an instance of the class has in source: methods, properties, class-level fields (dataclass,
        msgspec, TypedDict), `self.x = ...` in any method, and the same of its bases found in vLLM."""
        found = self.resolve(dotted, name)
        if found is None:
            return set()
        module, cls = found
        names: set[str] = set()
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(cls):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    names.add(target.attr)
        for base in cls.bases:
            base_name = _base_name(base)
            if base_name and base_name != name:
                names |= self.members(module, base_name)
        return names

    def base_names(self, dotted: str, name: str) -> set[str]:
        """The names of the class and all its bases found in vLLM (its MRO, as far as the source shows)."""
        found = self.resolve(dotted, name)
        if found is None:
            return set()
        module, cls = found
        names = {cls.name}
        for base in cls.bases:
            base_name = _base_name(base)
            if base_name:
                names |= {base_name} | self.base_names(module, base_name)
        return names

    def constant(self, dotted: str, name: str) -> object:
        """The literal value of a module-level constant (e.g. a tuple of strings)."""
        tree = self.module(dotted)
        for node in tree.body if tree else []:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                return ast.literal_eval(node.value)
        return None


def _requires(metadata: str) -> list[str]:
    return Parser().parsestr(metadata).get_all("Requires-Dist") or []


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):  # Generic[...], BaseRenderer[_T]
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _absolute(dotted: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module of `from .x import y` written in module `dotted`."""
    if not node.level:
        return node.module or ""
    parts = dotted.split(".")
    parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
    return ".".join(parts + ([node.module] if node.module else []))


def _lazy_target(value: ast.expr, name: str, dotted: str) -> tuple[str, str] | None:
    """vllm/__init__.py's `MODULE_ATTRS = {"Name": ".module:Name"}` -> ("vllm.module", "Name")."""
    if not isinstance(value, ast.Dict):
        return None
    for key, target in zip(value.keys, value.values, strict=True):
        if isinstance(key, ast.Constant) and key.value == name and isinstance(target, ast.Constant):
            module, _, attr = str(target.value).partition(":")
            module = dotted + module if module.startswith(".") else module
            return module, attr or name
    return None
