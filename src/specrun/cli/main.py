"""The ``specrun`` command. Each subcommand is a thin shell around one stage.

Exit codes: 0 success; 1 the specs are invalid / differ / the run failed (a failed
write, a full disk, a run directory another process is writing included);
2 usage errors (click's own), and `diff` when a side cannot be read or parsed;
123 fmt could not format; 130 / 143 a run (or any command) was interrupted by
SIGINT / SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from specrun.cli.args import SetCommand
from specrun.cli.colour import paint, use_colour
from specrun.spec.diagnostics import SpecError, render


def _spec_paths(paths, suffix=".train") -> list[str]:
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob(f"*{suffix}"))
            if not found:  # a mistyped folder in CI must not pass as "0 specs valid"
                raise click.UsageError(f"no {suffix} files in {p}")
            out += found
        else:
            out.append(str(path))
    return out


def _as_spec_file(ref: str) -> str:
    """A .train file as given; a run directory's spec.train; a spec name's latest run's."""
    path = Path(ref)
    if path.is_file():
        return ref
    if (path / "spec.train").is_file():
        return str(path / "spec.train")
    if path.suffix != ".train":
        from specrun.cli.runs import resolve_run

        try:
            return str(resolve_run(ref) / "spec.train")
        except FileNotFoundError:
            pass
    return ref  # read_source says it is missing, with the name as given


def _complete_specs(ctx, param, incomplete):
    from specrun.cli.commands import _items, _train_files

    return _items(_train_files(incomplete), incomplete)


def _complete_profiles(ctx, param, incomplete):
    from click.shell_completion import CompletionItem

    # While completing `run SPEC --profile <TAB>` click stops at the option, leaving SPEC in ctx.args.
    spec = ctx.params.get("spec") or (ctx.args[0] if ctx.args else None)
    if not spec:
        return []
    try:
        from specrun.spec.document import locate
        from specrun.spec.parse import parse, read_source

        names = locate(parse(read_source(spec), spec)).profiles
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


class _Specrun(click.Group):
    """Ctrl+C before a run has installed its own handlers (while torch imports, say) exits 130
    like a Ctrl+C later on, not with click's "Aborted!" and 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Specrun, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="specrun")
def main():
    """specrun: a training run as a reviewable file.

    \b
      specrun validate specs/*.train
      specrun plan specs/sha256_bitnet.train --profile smoke
      specrun run specs/sha256_bitnet.train --profile smoke
    """


# ---- validate ------------------------------------------------------------------------

@main.command(cls=SetCommand)
@click.argument("paths", nargs=-1, required=True, type=click.Path(), shell_complete=_complete_specs)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              help="How to print problems: for people, for tools, or as GitHub annotations.")
@click.option("-p", "--profile", default=None, help="Check only this profile (with any --set).")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Check the spec as `run` would see it with this override (repeatable).")
@click.option("--strict", is_flag=True, help="Fail on warnings (settings that can never take effect) too.")
def validate(paths, fmt, profile, overrides, strict):
    """Check specs (and every profile in them) without running anything.

    Errors fail; warnings (W codes: a setting that can never take effect, an input
    file that is missing) are printed and fail only with --strict.

    \b
    Example:
      specrun validate specs/*.train --format github
      specrun validate specs/savant.train -p smoke --set optimizer.lr=1e-4
    Exit 0 when all are valid, 1 when any is not (or, with --strict, has a warning).
    """
    from specrun import api
    from specrun.spec.parse import read_source

    diagnostics, sources = [], {}
    files = _spec_paths(paths)
    for path in files:
        try:
            sources[path] = read_source(path)
        except SpecError as err:
            sources.update(err.sources)
        found = api.validate(path, profile, overrides)
        diagnostics += found
        sources.update({f"<--set {i}>": o.replace("=", " ", 1) for i, o in enumerate(overrides, 1)})
    errors = [d for d in diagnostics if d.severity == "error"]
    warnings = [d for d in diagnostics if d.severity == "warning"]
    failed = bool(errors) or (strict and bool(warnings))
    if diagnostics:
        from specrun.spec.owncode import sources as own_sources

        sources = own_sources() | sources  # a syntax error in the user's code quotes their line
        click.echo(render(sorted(diagnostics, key=lambda d: d.sort_key()), sources, fmt,
                          colour=fmt == "text" and use_colour()))
    elif fmt == "json":
        click.echo("[]")
    if fmt == "text":
        bad = {d.span.path for d in (diagnostics if strict else errors)}
        if failed:
            click.echo(f"\n{len(errors)} error(s), {len(warnings)} warning(s) in {len(bad)} of {len(files)} file(s)"
                       if warnings else f"\n{len(errors)} problem(s) in {len(bad)} of {len(files)} file(s)", err=True)
        else:
            click.echo(("\n" if warnings else "") + f"{len(files)} spec(s) valid"
                       + (f", {len(warnings)} warning(s)" if warnings else ""))
    if failed:
        sys.exit(1)


# ---- fmt --------------------------------------------------------------------------------

@main.command("fmt")
@click.argument("paths", nargs=-1, required=True, type=click.Path(), shell_complete=_complete_specs)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if any file would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Print a unified diff instead of writing.")
def fmt_command(paths, check, show_diff):
    """Rewrite specs in the canonical layout, keeping comments.

    \b
    Example:
      specrun fmt specs/            # rewrite in place
      specrun fmt --check specs/    # CI: exit 1 if anything would change
    Exit 0, 1 when --check finds a change, 123 when a file cannot be formatted.
    """
    import difflib

    from specrun.engine.atomic import write_text_atomic
    from specrun.spec.fmt import FormatError, format_source
    from specrun.spec.parse import read_source

    changed, failed = [], False
    for path in _spec_paths(paths):
        try:
            text = read_source(path)
            out = format_source(text, path)
        except SpecError as err:
            click.echo(err.render(), err=True)
            failed = True
            continue
        except FormatError as err:
            click.echo(f"error: {err}", err=True)
            failed = True
            continue
        if out == text:
            continue
        changed.append(path)
        if show_diff:
            # git's a/ b/ prefixes suit relative paths; an absolute one would read a//tmp/...
            old_name, new_name = (path, path) if Path(path).is_absolute() else (f"a/{path}", f"b/{path}")
            click.echo("".join(difflib.unified_diff(
                text.splitlines(True), out.splitlines(True), old_name, new_name)), nl=False)
        elif check:
            click.echo(f"would reformat {path}")
        else:
            write_text_atomic(path, out)
            click.echo(f"reformatted {path}")
    if failed:
        sys.exit(123)
    if changed and (check or show_diff):
        sys.exit(1)


# ---- diff -----------------------------------------------------------------------------------

@main.command("diff")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--git", "git_mode", is_flag=True,
              help="Called by git as an external diff driver (7 arguments); always exits 0.")
def diff_command(files, git_mode):
    """Semantic differences between two specs: `path: old -> new`.

    Each side is a .train file, a run directory (its spec.train, as run), or a spec
    name meaning its latest run.

    \b
    Example:
      specrun diff specs/savant.train runs/savant/ID/spec.train
      specrun diff specs/savant.train savant      # what the latest run changed
    As a git diff driver (see README):
      git config diff.specrun.command "specrun diff --git"
    Exit 0 when they mean the same, 1 when they differ, 2 when either side cannot be
    read or parsed (its errors are printed; with --git, 0).
    """
    from specrun.spec.diff import diff
    from specrun.spec.parse import parse, read_source

    if git_mode:
        if len(files) < 7:
            raise click.UsageError("--git expects git's 7 arguments: path old-file old-hex old-mode new-file ...")
        name, a, b = files[0], files[1], files[4]
    elif len(files) != 2:
        raise click.UsageError("diff takes two spec files")
    else:
        name, a, b = None, files[0], files[1]

    def load(path):
        if path == "/dev/null":
            return None
        return parse(read_source(path if git_mode else _as_spec_file(path)), name or path)

    try:
        old, new = load(a), load(b)
    except SpecError as err:
        click.echo(err.render(), err=True)
        sys.exit(0 if git_mode else 2)
    if old is None or new is None:
        click.echo(f"{name}: {'new file' if old is None else 'deleted'}")
        sys.exit(0)
    lines = diff(old, new)
    if git_mode:
        click.echo(f"specrun diff a/{name} b/{name}")
    for line in lines:
        click.echo(line)
    sys.exit(0 if git_mode or not lines else 1)


# ---- plan -------------------------------------------------------------------------------------

def _load_spec(spec, profile, sets):
    """The checked spec, its warnings printed to stderr; errors printed and exit 1."""
    from specrun import api

    try:
        checked = api.load_spec(spec, profile, sets)
    except SpecError as err:
        click.echo(err.render(colour=use_colour(sys.stderr)), err=True)
        sys.exit(1)
    if checked.warnings:
        click.echo(render(checked.warnings, checked.sources, colour=use_colour(sys.stderr)) + "\n", err=True)
    return checked


@main.command(cls=SetCommand)
@click.argument("spec", type=click.Path(), shell_complete=_complete_specs)
@click.option("--profile", "-p", help="Apply a profile defined in the spec.", shell_complete=_complete_profiles)
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="Override a setting (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(spec, profile, sets, as_json):
    """Show the compiled plan: defaults filled, units resolved, phases laid out.

    \b
    Example:
      specrun plan specs/savant.train --set optimizer.lr=1e-5
    """
    from specrun.cli.report import describe_plan

    from specrun import api

    compiled = api.build_plan(_load_spec(spec, profile, sets))
    if as_json:
        click.echo(json.dumps(compiled.to_json(), indent=2))
    else:
        click.echo(describe_plan(compiled))


# ---- run ------------------------------------------------------------------------------------------

@main.command(cls=SetCommand)
@click.argument("spec", type=click.Path(), shell_complete=_complete_specs)
@click.option("--profile", "-p", help="Apply a profile defined in the spec.", shell_complete=_complete_profiles)
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="Override a setting (repeatable).")
@click.option("--run-dir", type=click.Path(), help="Run directory (default runs/<spec>/<run-id>).")
@click.option("--new", is_flag=True, help="Start a fresh run even when the spec says `resume latest`.")
@click.option("--allow-spec-change", is_flag=True, help="Resume although the spec changed since the run began.")
@click.option("--profile-trace", is_flag=True, help="Record a torch.profiler trace into the run directory.")
@click.option("--quiet", "-q", is_flag=True, help="Only the final line (finished, failed or interrupted) and errors.")
@click.option("--progress", "progress_every", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Off a terminal, a plain progress line every SECONDS (0: none; default log.progress, 30s).")
def run(spec, profile, sets, run_dir, new, allow_spec_change, profile_trace, quiet, progress_every):
    """Train: execute the spec's plan on the generic engine.

    \b
    Example:
      specrun run specs/sha256_bitnet.train --profile smoke
      specrun run specs/savant.train --set optimizer.lr=1e-5 --new
    Exit 0 finished, 1 failed (reason on the last line), 130/143 interrupted (state saved).
    """
    from specrun import api

    checked = _load_spec(spec, profile, sets)
    try:
        api.require_torch()
    except api.TorchMissing as exc:
        raise click.ClickException(str(exc)) from None
    from specrun.engine.distributed import launch_if_needed

    compiled = api.build_plan(checked)
    launched = launch_if_needed(compiled, sys.argv)
    if launched is not None:
        sys.exit(launched)
    result = api.run(checked, run_dir=run_dir, new=new, allow_spec_change=allow_spec_change, quiet=quiet,
                     profile_trace=profile_trace, progress_every=progress_every, dist=_dist_from_env(compiled))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one final line, not one per rank
        if result.summary and not quiet:
            from specrun.cli.summary import render_summary

            click.echo(render_summary(result.summary), err=True)
        status = paint(f"{result.status}:", "green" if result.code == 0 else "red",
                       sys.stderr if result.code else sys.stdout, bold=True)
        click.echo(f"{status} {result.message}", err=result.code != 0)
    sys.exit(result.code)


def _dist_from_env(compiled):
    from specrun.engine.distributed import from_environment

    return from_environment(compiled)


from specrun.cli.commands import export_command, new_command, plot_command, runs_command  # noqa: E402

main.add_command(runs_command)
main.add_command(plot_command)
main.add_command(export_command)
main.add_command(new_command)

from specrun.cli.sweep import sweep_command  # noqa: E402

main.add_command(sweep_command)

from specrun.cli.components import components_command  # noqa: E402

main.add_command(components_command)

