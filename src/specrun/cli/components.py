"""``specrun components``: every component a spec can name, with its settings.

Built-in ones (``schemas/components/``), plugins, the torch.optim/torch.nn
signature table, the built-in metrics, and with ``--spec`` the spec's own code
(read from source, never imported). Torch-free.
"""

from __future__ import annotations

import json
import sys

import click

from specrun.spec import catalog as cat

KIND_ORDER = ("task", "model", "loss", "metrics", "optimizer")


def _type_text(schema: dict) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), dict) and schema["items"].get("type"):
        count = schema.get("minItems") if schema.get("minItems") == schema.get("maxItems") else None
        return f"list of {_type_text(schema['items'])}" + (f" ({count} items)" if count else "")
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    return kind or "any"


def _params(comp: cat.Component) -> list[dict]:
    schema = comp.params
    required = set(schema.get("required", ())) | set(comp.extra.get("needs", ()))
    out = []
    for name, sub in (schema.get("properties") or {}).items():
        entry = {"name": name, "type": _type_text(sub), "required": name in required}
        if "default" in sub:
            entry["default"] = sub["default"]
        if sub.get("description"):
            entry["description"] = sub["description"]
        out.append(entry)
    return out


def _origin(comp: cat.Component) -> str:
    if comp.source.startswith(("own code", "plugin")):
        return comp.source
    if comp.name.startswith("torch."):
        return "torch"
    return "built-in"


def _record(comp: cat.Component) -> dict:
    out = {"kind": comp.kind, "name": comp.name, "origin": _origin(comp), "summary": comp.summary,
           "params": _params(comp), "takes_other_settings": bool(comp.params.get("additionalProperties"))}
    if comp.extra.get("aliases"):
        out["aliases"] = list(comp.extra["aliases"])
    if comp.metrics:
        out["metrics"] = list(comp.metrics)
    if comp.extra.get("unchecked"):
        out["note"] = comp.extra["unchecked"]
    if comp.extra.get("code", {}).get("file"):
        out["file"] = comp.extra["code"]["file"]
    return out


def _metric_records() -> list[dict]:
    return [{"kind": "metrics", "name": name, "origin": "built-in", "summary": text, "params": []}
            for name, text in cat.BUILTIN_METRICS.items()]


def _spec_components(spec: str) -> list[dict]:
    """The spec's own code, read from source."""
    from specrun.spec.own_rules import metric_entries
    from specrun.spec.document import locate
    from specrun.spec.owncode import CodeProblem, is_reference
    from specrun.spec.parse import parse, read_source

    data = locate(parse(read_source(spec), spec)).data
    named = [(kind, (data.get(kind) or {}).get("type")) for kind in cat.KINDS if isinstance(data.get(kind), dict)]
    named += [("metrics", name) for _, name, _ in metric_entries(data)]
    out = []
    for kind, name in named:
        if not is_reference(name):
            continue
        try:
            out.append(_record(cat.own_component(kind, name, spec)))
        except CodeProblem as problem:
            out.append({"kind": kind, "name": name, "origin": "own code", "summary": "", "params": [],
                        "error": str(problem)})
    return out


def all_records(spec: str | None = None) -> list[dict]:
    seen, out = set(), []
    for (kind, _), comp in sorted(cat.catalog().items(), key=lambda kv: (kv[0][0], kv[1].name)):
        if (kind, comp.name) not in seen:
            seen.add((kind, comp.name))
            out.append(_record(comp))
    out += _metric_records()
    if spec:
        out += _spec_components(spec)
    return sorted(out, key=lambda r: (KIND_ORDER.index(r["kind"]) if r["kind"] in KIND_ORDER else 9,
                                      r["origin"] != "built-in", r["name"]))


def _names_of(records: list[dict]) -> list[str]:
    return [r["name"] for r in records] + [a for r in records for a in r.get("aliases", ())]


def _detail(rec: dict) -> str:
    lines = [f"{rec['kind']} {rec['name']}   ({rec['origin']})"]
    if rec.get("summary"):
        lines.append(f"  {rec['summary']}")
    for key in ("file", "note", "error"):
        if rec.get(key):
            lines.append(f"  {key}: {rec[key]}")
    if rec.get("aliases"):
        lines.append(f"  also named: {', '.join(rec['aliases'])}")
    if rec.get("metrics"):
        lines.append(f"  reports: {', '.join(rec['metrics'])}")
    if rec["params"]:
        lines.append("  settings:")
        width = max(len(p["name"]) for p in rec["params"])
        for p in rec["params"]:
            default = "required" if p["required"] else (
                f"default {json.dumps(p['default'])}" if "default" in p else "optional")
            lines.append(f"    {p['name']:<{width}}  {p['type']}, {default}")
            if p.get("description") and (rec["origin"] in ("built-in", "torch") and p["type"] == "any"
                                         or rec["origin"] == "built-in" or rec["origin"].startswith("plugin")):
                lines.append(f"    {'':<{width}}  {p['description']}")
    elif not rec.get("error"):
        lines.append("  settings: none" + (" declared (others are passed on)" if rec.get("takes_other_settings")
                                           else ""))
    return "\n".join(lines)


def _line(rec: dict) -> str:
    summary = rec.get("summary") or rec.get("note") or rec.get("error") or ""
    if len(summary) > 90:
        summary = summary[:87] + "..."
    return f"  {rec['name']:<32} {summary}".rstrip()


@click.command("components")
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("--spec", type=click.Path(), help="Also list the code this spec names (read, never run).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def components_command(kind, name, spec, as_json):
    """List what a spec can name: tasks, models, losses, metrics, optimizers, with their settings.

    \b
    Example:
      specrun components                      # everything, one line each
      specrun components optimizer            # every optimizer
      specrun components optimizer RAdam      # its settings, types and defaults
      specrun components model --spec my.train   # including the spec's own code
    """
    from specrun.spec.diagnostics import SpecError, did_you_mean

    try:
        records = all_records(spec)
    except SpecError as err:
        click.echo(err.render(), err=True)
        sys.exit(1)
    if kind is not None:
        kind = {"tasks": "task", "models": "model", "losses": "loss", "optimizers": "optimizer",
                "metric": "metrics", "data": "task"}.get(kind, kind)
        if kind not in KIND_ORDER:
            click.echo(f"error: no component kind '{kind}'; kinds: {', '.join(KIND_ORDER)}"
                       + (f" ({did_you_mean(kind, KIND_ORDER)})" if did_you_mean(kind, KIND_ORDER) else ""),
                       err=True)
            sys.exit(1)
        records = [r for r in records if r["kind"] == kind]
    if name is not None:
        if ":" in name and not any(r["name"] == name for r in records):
            try:
                records = records + [_record(cat.own_component(kind or "model", name, spec or ""))]
            except Exception as exc:  # a CodeProblem: said in one line
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
        match = [r for r in records if r["name"] == name or name in r.get("aliases", ())]
        if not match:
            close = did_you_mean(name, _names_of(records))
            click.echo(f"error: no {kind or 'component'} named '{name}'" + (f"; {close}" if close else "")
                       + f"\n  your own code is named by file or module: `{kind or 'model'} \"models.py:MyNet\"`; "
                       + "`specrun components KIND NAME --spec SPEC` reads it", err=True)
            sys.exit(1)
        records = match
    if as_json:
        click.echo(json.dumps(records, indent=2))
    elif name is not None:
        click.echo("\n\n".join(_detail(r) for r in records))
    else:
        for k in KIND_ORDER:
            group = [r for r in records if r["kind"] == k]
            if group:
                click.echo(f"{k}:")
                for r in group:
                    click.echo(_line(r))
