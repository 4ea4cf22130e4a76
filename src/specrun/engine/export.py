"""export: a run's trained model as ``model.safetensors`` + ``model.json``, and back.

``model.json`` holds what rebuilding the model takes: the spec as run (profile and
overrides already applied), its hash, the shapes the task gave the model
(``model_info``), the parameters the curriculum's phases had set on the model and
the state of its switches when the checkpoint was taken, and the weights' dtype.
Loading re-checks that spec, builds the plan, and asks the catalog for the model's
factory, exactly as ``specrun run`` does, so built-in and user components load alike.

Loading an export reads only JSON and safetensors: no pickle. Loading straight
from a run directory reads its checkpoint the way a resume does
(``torch.load(weights_only=True)``, size and CRC-32 checked against the index).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from specrun.components.api import Context
from specrun.engine.checkpoint import Checkpointer
from specrun.engine.sharded import ShardedStore, sharded
from specrun.engine.store import CheckpointError
from specrun.engine.curriculum import Curriculum
from specrun.engine.setup import SetupError, component_factory
from specrun.plan import Plan, build_plan
from specrun.spec.diagnostics import SpecError

FORMAT = "specrun-export"
VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST = "model.json"
WHICH = ("latest", "final", "best")


class ExportError(RuntimeError):
    """The run, checkpoint or export cannot give a model; the message says why."""


@dataclass
class Exported:
    weights: Path
    manifest: Path
    checkpoint: Path
    step: int


# ---- rebuilding ----------------------------------------------------------------------------

def _plan_from_text(spec_text: str, where: str) -> Plan:
    """The plan of a spec as run: parsed and checked again, never trusted as written."""
    from specrun.spec.check import check
    from specrun.spec.parse import parse

    try:
        return build_plan(check(parse(spec_text, where)))
    except SpecError as err:
        raise ExportError(f"{where} is not a valid spec any more:\n{err.render()}") from None


def build_model(plan: Plan, info: dict, phase_params: dict, switches: dict, weights_dtype: str,
                device="cpu") -> torch.nn.Module:
    """The model as the run had it when the checkpoint was taken, weights not yet loaded."""
    device = torch.device(device)
    ctx = Context(seed=plan.seed, device=device, batch_size=plan.batch)
    try:
        model = component_factory(plan, "model")(plan.components["model"]["params"], info, ctx)
    except SetupError as exc:
        raise ExportError(str(exc)) from None
    model = model.to(device)
    if weights_dtype == "bf16":
        model = model.to(torch.bfloat16)
    if phase_params:
        if not hasattr(model, "set_params"):
            raise ExportError(f"the curriculum set model parameters but {type(model).__name__} has no set_params")
        model.set_params(phase_params)
    for name, on in switches.items():
        model.set_switch(name, on)
    return model


def _model_switches(state_switches: dict) -> dict:
    """``{"model.memory.enable": True}`` -> ``{"memory.enable": True}``: what set_switch takes."""
    return {key.partition(".")[2]: bool(on) for key, on in state_switches.items()
            if isinstance(key, str) and key.startswith("model.")}


def _task_info(plan: Plan) -> dict:
    """For checkpoints written before they carried ``model_info``: ask the task itself."""
    ctx = Context(seed=plan.seed, device=torch.device("cpu"), batch_size=plan.batch)
    task = component_factory(plan, "task")(plan.components["task"]["params"], ctx)
    try:
        return dict(task.model_info())
    finally:
        task.close()


# ---- reading a run ------------------------------------------------------------------------------

def _checkpoint_entry(ck: Checkpointer, which: str, run_dir: Path) -> dict:
    entries = ck.index()
    if which == "latest":
        found = ck.candidates()
    else:
        found = sorted((e for e in entries if e["kind"] == which), key=lambda e: (e["step"], e["time"]),
                       reverse=True)
    if not found:
        kinds = sorted({e["kind"] for e in entries})
        raise ExportError(f"{run_dir} has no {which} checkpoint"
                          + (f" (it has: {', '.join(kinds)}; choose with --which)" if kinds else
                             " (no checkpoint at all)"))
    return found[0]


def _read_checkpoint(ck: Checkpointer, entry: dict) -> tuple[dict, Path]:
    """The checkpoint's state, its size and CRC-32 checked against the index by the store."""
    path = ck.dir / entry["file"]
    try:
        state = ck.store.load(entry["file"], entry)
    except (CheckpointError, OSError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ExportError(f"{path} holds no model weights")
    return state, path


def _plain(value) -> bool:
    """JSON-ready scalars, lists and string-keyed dicts only."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _run_meta(run_dir: Path) -> dict:
    """profile and overrides from plan.json, read as untrusted: wrong types are dropped."""
    try:
        data = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    profile = data.get("profile") if isinstance(data.get("profile"), str) else None
    overrides = [o for o in data.get("overrides") or [] if isinstance(o, str)] \
        if isinstance(data.get("overrides"), list) else []
    source = data.get("source") if isinstance(data.get("source"), str) and data.get("source") else None
    return {"profile": profile, "overrides": overrides,
            "source": str(Path(source).resolve()) if source else None}


def from_run(run_dir: str | Path, which: str = "latest", device="cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, manifest) from a run directory's checkpoint."""
    if which not in WHICH:
        raise ExportError(f"--which must be one of {', '.join(WHICH)}, got {which!r}")
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.train"
    try:
        spec_text = spec_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"{run_dir} is not a run directory: cannot read {spec_path} ({exc.strerror or exc})") from None
    meta = _run_meta(run_dir)
    # The user's own code is named relative to the spec's folder: check the spec as run from there.
    plan = _plan_from_text(spec_text, meta["source"] or str(spec_path))
    ck_dir = run_dir / plan.checkpoint.dir
    store = ShardedStore(ck_dir, whole=True) if sharded(plan) else None  # FSDP: shards joined here
    ck = Checkpointer.of(ck_dir, plan.checkpoint, store=store,
                         repair=False)  # reading only: a damaged index is not mended here
    entry = _checkpoint_entry(ck, which, run_dir)
    state, path = _read_checkpoint(ck, entry)
    info = state.get("model_info")
    if not (isinstance(info, dict) and _plain(info)):
        info = _task_info(plan)
    curriculum = Curriculum(plan.axes)
    if isinstance(state.get("curriculum"), dict):
        curriculum.load_state_dict(state["curriculum"])
    switches = state.get("switches") if isinstance(state.get("switches"), dict) else {}
    manifest = {
        "format": FORMAT, "version": VERSION,
        "spec_name": plan.name, "run_id": run_dir.name, **meta,
        "plan_hash": plan.spec_hash, "checkpoint_spec_hash": state.get("spec_hash"),
        "checkpoint": {"file": entry["file"], "kind": entry["kind"], "step": int(entry["step"])},
        "phases": curriculum.phase_names(),
        "model": {
            "type": plan.components["model"]["type"],
            "params": plan.components["model"]["params"],
            "info": info,
            "phase_params": curriculum.merged().get("model", {}),
            "switches": _model_switches(switches),
            "weights_dtype": state.get("weights_dtype") if state.get("weights_dtype") in ("fp32", "bf16") else "fp32",
        },
        "spec": spec_text,
    }
    model = build_model(plan, info, manifest["model"]["phase_params"], manifest["model"]["switches"],
                        manifest["model"]["weights_dtype"], device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ExportError(f"{path}'s weights do not fit the model its spec describes: "
                          f"{str(exc).splitlines()[0]}") from None
    manifest["_checkpoint_path"] = str(path)
    return model.eval(), manifest


# ---- writing and reading an export ----------------------------------------------------------------

def export(run_dir: str | Path, out_dir: str | Path, which: str = "latest") -> Exported:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json``; never over existing files."""
    from safetensors.torch import save_model

    from specrun.engine.atomic import write_json_atomic

    model, manifest = from_run(run_dir, which)
    checkpoint = Path(manifest.pop("_checkpoint_path"))
    out = Path(out_dir)
    weights, meta = out / WEIGHTS, out / MANIFEST
    for path in (weights, meta):
        if path.exists():
            raise ExportError(f"{path} exists; export to another folder (nothing was overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{WEIGHTS}.partial"
        save_model(model, str(tmp), metadata={"format": FORMAT, "spec": manifest["spec_name"],
                                              "run_id": manifest["run_id"], "plan_hash": manifest["plan_hash"]})
        tmp.replace(weights)
        write_json_atomic(meta, manifest)
    except OSError as exc:
        raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    return Exported(weights, meta, checkpoint, manifest["checkpoint"]["step"])


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(model, dict):
        raise ExportError(f"{path} is not a specrun export (no \"format\": \"{FORMAT}\")")
    if manifest.get("version") != VERSION:
        raise ExportError(f"{path} is export version {manifest.get('version')}; this specrun reads {VERSION}")
    for key, kind in (("spec", str), ("plan_hash", str)):
        if not isinstance(manifest.get(key), kind):
            raise ExportError(f"{path}: '{key}' is missing or not a {kind.__name__}")
    for key in ("info", "phase_params", "switches"):
        if not (isinstance(model.get(key), dict) and _plain(model[key])):
            raise ExportError(f"{path}: model.{key} is missing or not plain JSON data")
    if model.get("weights_dtype") not in ("fp32", "bf16"):
        raise ExportError(f"{path}: model.weights_dtype must be fp32 or bf16")
    return manifest


def from_export(folder: str | Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, manifest) from an export folder: JSON and safetensors only."""
    from safetensors.torch import load_model

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    manifest = _read_manifest(folder / MANIFEST)
    source = manifest.get("source") if isinstance(manifest.get("source"), str) else None
    plan = _plan_from_text(manifest["spec"], source or str(folder / MANIFEST) + " (spec)")
    if plan.spec_hash != manifest["plan_hash"]:
        raise ExportError(f"{folder / MANIFEST}: its spec hashes to {plan.spec_hash}, not the recorded "
                          f"{manifest['plan_hash']}: the file was edited")
    model_meta = manifest["model"]
    model = build_model(plan, model_meta["info"], model_meta["phase_params"],
                        {k: bool(v) for k, v in model_meta["switches"].items()}, model_meta["weights_dtype"], device)
    try:
        load_model(model, str(folder / WEIGHTS), strict=True, device=str(device))
    except FileNotFoundError:
        raise ExportError(f"{folder / WEIGHTS} is missing") from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise ExportError(f"{folder / WEIGHTS} does not fit the model in {MANIFEST}: "
                          f"{str(exc).splitlines()[0]}") from None
    return model.eval(), manifest
