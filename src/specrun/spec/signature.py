"""The settings a user's class or function takes, read from its source without running it.

``validate`` must never execute user code, so the signature comes from the
source's AST: parameter names, defaults (when they are literals) and simple
annotations (int, float, str, bool, list[...], tuple[...], Literal[...],
Optional[...] / ``X | None``). The result is a JSON Schema in the form the
catalog uses for built-in components, so user settings are checked by the same
code, with the same messages.

Also read here: the names a data file announces to the model (``model_info``
dict keys, class attributes, ``self.x = ...``), and the metric names a metric
function returns as a dict literal.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Bases whose constructor takes nothing a spec sets: a class deriving only from
# these (and from classes of the same file) is fully described by its own source.
TRIVIAL_BASES = {"object", "Module", "Dataset", "IterableDataset", "ABC", "Generic", "Protocol"}
DATACLASS_DECORATORS = {"dataclass", "dataclasses.dataclass"}
NO_DEFAULT = object()


class Unreadable(Exception):
    """The signature cannot be known from the source (an external base class, ...)."""


@dataclass
class Param:
    name: str
    schema: dict  # JSON Schema of the value ({} for anything)
    default: object = NO_DEFAULT  # a literal default; NO_DEFAULT when none or not a literal
    required: bool = True
    annotation: str = ""  # as written, for `specrun components`


@dataclass
class Signature:
    params: list[Param]
    takes_any: bool = False  # **kwargs: settings beyond the named ones are accepted
    summary: str = ""
    line: int = 1

    def schema(self, required: bool = True) -> dict:
        props = {}
        for p in self.params:
            one = dict(p.schema)
            if p.default is not NO_DEFAULT and p.default is not None:
                one["default"] = p.default
            if p.annotation:
                one["description"] = p.annotation
            props[p.name] = one
        out = {"type": "object", "additionalProperties": self.takes_any, "properties": props}
        needed = [p.name for p in self.params if p.required]
        if required and needed:
            out["required"] = needed
        return out


# ---- annotations -> schema ---------------------------------------------------------------

_SIMPLE = {"int": {"type": "integer"}, "float": {"type": "number"}, "str": {"type": "string"},
           "bool": {"type": "boolean"}, "complex": {}, "Any": {}, "object": {}}
_LISTS = {"list", "List", "Sequence", "Iterable", "tuple", "Tuple", "set", "frozenset"}


def _name_of(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr  # typing.Literal, t.List: the last part says what it is
    return ""


_UNWRITABLE = {"type": "null"}  # None, or a Tensor: nothing a spec can write, so a union keeps the rest


def annotation_schema(node) -> dict:
    """A JSON Schema for an annotation; {} (anything) for what it cannot read."""
    schema = _annotation(node)
    return {} if schema == _UNWRITABLE else schema


def _annotation(node) -> dict:
    if node is None:
        return {}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "int" under __future__ annotations
        try:
            return _annotation(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return {}
    if isinstance(node, ast.Constant) and node.value is None or _name_of(node) == "Tensor":
        return dict(_UNWRITABLE)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([_annotation(node.left), _annotation(node.right)])
    if isinstance(node, (ast.Name, ast.Attribute)):
        return dict(_SIMPLE.get(_name_of(node), {"type": "array"} if _name_of(node) in _LISTS else {}))
    if isinstance(node, ast.Subscript):
        head = _name_of(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Literal":
            values = [a.value for a in args if isinstance(a, ast.Constant)]
            return {"enum": values} if len(values) == len(args) else {}
        if head == "Optional":
            return _union([_annotation(args[0]), dict(_UNWRITABLE)])
        if head == "Union":
            return _union([_annotation(a) for a in args])
        if head in ("tuple", "Tuple") and not (len(args) == 2 and isinstance(args[1], ast.Constant)
                                               and args[1].value is Ellipsis):
            items = [annotation_schema(a) for a in args]
            out = {"type": "array", "minItems": len(items), "maxItems": len(items)}
            if items and all(i == items[0] for i in items):
                out["items"] = items[0]
            return out
        if head in _LISTS:
            return {"type": "array", "items": annotation_schema(args[0])} if args else {"type": "array"}
        if head == "Annotated":
            return annotation_schema(args[0])
    return {}


def _union(parts: list[dict]) -> dict:
    """Union of schemas: a None member is dropped (a spec cannot write None; the default is None)."""
    if parts and all(p == _UNWRITABLE for p in parts):
        return dict(_UNWRITABLE)
    parts = [p for p in parts if p != _UNWRITABLE]
    if any(p == {} for p in parts):
        return {}
    if len(parts) == 1:
        return parts[0]
    if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
        types = list(dict.fromkeys(p["type"] for p in parts))
        if set(types) == {"integer", "number"}:
            return {"type": "number"}
        return {"type": types}
    return {}


def _default_schema(value) -> dict:
    """What an unannotated parameter takes, from its default: ``width=64`` takes a number."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, (int, float)):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, (list, tuple)):
        return {"type": "array"}
    return {}


def _literal(node):
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NO_DEFAULT
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, (bool, int, float, str, list, type(None))) else NO_DEFAULT


# ---- functions and classes -----------------------------------------------------------------

def _params_of(fn: ast.FunctionDef | ast.AsyncFunctionDef, skip: int) -> tuple[list[Param], bool]:
    a = fn.args
    ordered = list(a.posonlyargs) + list(a.args)
    defaults = [None] * (len(ordered) - len(a.defaults)) + list(a.defaults)
    pairs = list(zip(ordered, defaults))
    pairs = pairs[skip:] + list(zip(a.kwonlyargs, a.kw_defaults))
    params = []
    for arg, default in pairs:
        value = NO_DEFAULT if default is None else _literal(default)
        schema = annotation_schema(arg.annotation)
        if not schema and value is not NO_DEFAULT:
            schema = _default_schema(value)
        params.append(Param(arg.arg, schema, value, required=default is None,
                            annotation=ast.unparse(arg.annotation) if arg.annotation is not None else ""))
    return params, a.kwarg is not None


def _summary(node) -> str:
    doc = ast.get_docstring(node) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """Names a module defines at its top level: classes, functions and plain assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def _init_of(cls: ast.ClassDef, names: dict, seen: set) -> ast.FunctionDef | None | str:
    """The __init__ a class uses: its own, or the first of its same-file bases that has one.

    Returns None when the constructor takes nothing, "dataclass" for a dataclass, and
    raises Unreadable when a base outside the file decides it.
    """
    if any(_name_of(d if not isinstance(d, ast.Call) else d.func) in ("dataclass",) or
           ast.unparse(d if not isinstance(d, ast.Call) else d.func) in DATACLASS_DECORATORS
           for d in cls.decorator_list):
        return "dataclass"
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__init__":
            return node
    for base in cls.bases:
        name = _name_of(base)
        local = names.get(name) if isinstance(base, ast.Name) else None
        if isinstance(local, ast.ClassDef) and name not in seen:
            found = _init_of(local, names, seen | {name})
            if found is not None:
                return found
        elif name not in TRIVIAL_BASES:
            raise Unreadable(f"its constructor comes from {ast.unparse(base)}, defined elsewhere")
    return None


def _dataclass_params(cls: ast.ClassDef) -> list[Param]:
    params = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if _name_of(node.annotation if not isinstance(node.annotation, ast.Subscript)
                        else node.annotation.value) == "ClassVar":
                continue
            value = NO_DEFAULT if node.value is None else _literal(node.value)
            schema = annotation_schema(node.annotation)
            params.append(Param(node.target.id, schema, value, required=node.value is None,
                                annotation=ast.unparse(node.annotation)))
    return params


def signature(tree: ast.Module, name: str, skip_function: int = 0, skip_method: int = 0) -> Signature:
    """The settings ``name`` takes. ``skip_*``: leading positional parameters the engine passes
    (a loss function's outputs and batch; an optimizer's parameters), after ``self``."""
    names = top_level(tree)
    node = names[name]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        params, takes_any = _params_of(node, skip_function)
        return Signature(params, takes_any, _summary(node), node.lineno)
    if isinstance(node, ast.ClassDef):
        init = _init_of(node, names, {name})
        if init == "dataclass":
            return Signature(_dataclass_params(node), False, _summary(node), node.lineno)
        if init is None:
            return Signature([], False, _summary(node), node.lineno)
        params, takes_any = _params_of(init, 1 + skip_method)
        return Signature(params, takes_any, _summary(node), node.lineno)
    raise Unreadable(f"'{name}' is assigned, not defined with def or class")


# ---- what a data file announces, what a metric function returns ---------------------------

def _dict_keys(node) -> set[str] | None:
    if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                          for k in node.keys):
        return {k.value for k in node.keys}
    if isinstance(node, ast.Call) and _name_of(node.func) == "dict" and not node.args:
        return {kw.arg for kw in node.keywords if kw.arg}
    return None


def announced(tree: ast.Module) -> set[str]:
    """Every name a data file might hand the model: ``model_info`` keys, class attributes and
    ``self.x`` assignments in any class. Generous on purpose: only a name missing from all
    of them is reported as missing before the run."""
    out: set[str] = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for node in ast.walk(cls):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        out.add(t.id)
                    elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        out.add(t.attr)
            if isinstance(node, ast.FunctionDef) and node.name == "model_info":
                for ret in (r for r in ast.walk(node) if isinstance(r, ast.Return)):
                    out |= _dict_keys(ret.value) or set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, (ast.Name, ast.Attribute)) and
                                                _name_of(t) == "model_info" for t in node.targets):
            out |= _dict_keys(node.value) or set()
    return out


def returned_names(tree: ast.Module, name: str) -> list[str] | None:
    """The keys of the dict literal(s) a function returns, when every return is one."""
    node = top_level(tree).get(name)
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    keys: list[str] = []
    returns = [r for r in ast.walk(node) if isinstance(r, ast.Return)]
    for ret in returns:
        found = _dict_keys(ret.value)
        if found is None:
            return None
        keys += sorted(found - set(keys))
    return keys or None
