"""Rules for the user's own code and the spec's `metrics`: what the JSON Schema cannot say.

A reference that cannot be read becomes a diagnostic at the spec's value (or at the
user's line, for a syntax error in their file); a model argument nobody gives is
missing when what the data announces is known; `metrics` names built-ins or functions
whose returned names gates may read. Torch-free; never imports the user's code.
"""

from __future__ import annotations

from specrun.spec import catalog as cat
from specrun.spec import owncode
from specrun.spec.diagnostics import Diagnostic, did_you_mean
from specrun.spec.document import Located
from specrun.spec.messages import schema_diagnostics


def code_problem(loc: Located, path: tuple, problem: owncode.CodeProblem) -> Diagnostic:
    """A problem with the code a spec names: at the user's line when it is in their file."""
    named = loc.value_span(path)
    if problem.at is not None:
        hint = f"named by the spec at {named}" + (f"; {problem.hint}" if problem.hint else "")
        return Diagnostic(problem.code, problem.message, problem.at, hint)
    return Diagnostic(problem.code, problem.message, named, problem.hint)


def unknown_hint(name: str, known, kind: str, shown=None) -> str:
    close = did_you_mean(name, known)
    own = f'for your own code, name the file or module: `{kind} "{_own_example(kind)}"`'
    return f"{close} Or {own}" if close else f"known {kind}: {', '.join(shown or sorted(known))}; {own}"


def _own_example(kind: str) -> str:
    return {"task": "data.py:make_datasets", "model": "models.py:MyNet", "loss": "losses.py:my_loss",
            "optimizer": "optim.py:MyOptimizer", "metrics": "scores.py:my_metrics"}.get(kind, "file.py:Name")


def component_of(data: dict, kind: str, spec_path: str = ""):
    """The catalog entry, or the user's own code (read from source), that ``kind`` names."""
    block = data.get(kind)
    name = block.get("type") if isinstance(block, dict) else None
    if not isinstance(name, str):
        return None
    try:
        return cat.resolve(kind, name, spec_path)
    except owncode.CodeProblem:  # reported once, by component_diagnostics
        return None


def model_needs_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """A user model's required constructor arguments: from the spec, or announced by the data.
    Reported only when what the data announces is known (its source, or a catalog entry)."""
    model, task = data.get("model"), data.get("task")
    if not isinstance(model, dict) or not owncode.is_reference(model.get("type")) or not isinstance(task, dict):
        return []
    comp, data_comp = component_of(data, "model", loc.path), component_of(data, "task", loc.path)
    if comp is None or data_comp is None:
        return []
    announced = data_comp.extra.get("announces", data_comp.extra.get("provides"))
    if announced is None:
        return []
    out = []
    for need in comp.extra.get("needs", ()):
        if need in model or need in announced:
            continue
        out.append(Diagnostic("E204", f"missing setting '{need}' in model", loc.span(("model",), key=True),
                              f"{model['type']} takes '{need}' and task {task.get('type')} does not announce it: "
                              f"set `{need} VALUE` in the model block, or give the dataset a `model_info` "
                              f"dict (or an attribute) named {need}"))
    return out


def metric_entries(data: dict) -> list[tuple[tuple, str, dict]]:
    """(data path of the name, name, its settings) for each metric the spec asks for."""
    raw = data.get("metrics")
    if isinstance(raw, list):
        return [(("metrics", i), item, {}) for i, item in enumerate(raw) if isinstance(item, str)]
    if isinstance(raw, dict) and isinstance(raw.get("type"), str):
        return [(("metrics", "type"), raw["type"], {k: v for k, v in raw.items() if k != "type"})]
    return []


def metric_names(data: dict, spec_path: str = "") -> list[tuple[str, str]]:
    """(metric name, the entry that reports it) for the spec's `metrics`."""
    out = []
    for _, name, settings in metric_entries(data):
        if cat.is_builtin_metric(name):
            out.append((name, name))
            continue
        if not owncode.is_reference(name):
            continue
        try:
            comp = cat.own_component("metrics", name, spec_path)
        except owncode.CodeProblem:
            continue
        names = settings.get("names") if isinstance(settings.get("names"), list) else comp.extra.get("returns")
        out += [(n, name) for n in names or () if isinstance(n, str)]
    return out


METRIC_NAMES = {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "description": "The names of the scalars the function returns (what gates read)."}


def metrics_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    for path, name, settings in metric_entries(data):
        if cat.is_builtin_metric(name):
            if settings:
                out.append(Diagnostic("E200", f"built-in metric {name} takes no settings",
                                      loc.span(("metrics",), key=True), "e.g. `metrics [accuracy, top5]`"))
            continue
        if not owncode.is_reference(name):
            out.append(Diagnostic("E300", f"unknown metric '{name}'", loc.value_span(path),
                                  unknown_hint(name, ["accuracy", "perplexity", "top5"], "metrics")))
            continue
        try:
            comp = cat.own_component("metrics", name, loc.path)
        except owncode.CodeProblem as problem:
            out.append(code_problem(loc, path, problem))
            continue
        schema = dict(comp.params, properties={**comp.params.get("properties", {}), "names": METRIC_NAMES})
        base = ("metrics",) if path[-1] == "type" else path
        out += schema_diagnostics(loc, settings, schema, base, f"metrics {name}")
        if "names" not in settings and not comp.extra.get("returns"):
            out.append(Diagnostic("E204", f"missing setting 'names' in metrics {name}", loc.value_span(path),
                                  "say which scalars it returns, so gates can read them: "
                                  f'`metrics "{name}" {{ names [f1, recall] }}` (or return a dict literal)'))
    return out
