"""`specrun plan`: the compiled plan, with units resolved, profiles and --set applied."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from specrun.spec.check import load
from specrun.cli import main
from specrun.plan import build_plan

SPEC = """\
spec plan80k
task rule_classification {
  features 16
}
model mlp {
  width 64
}
loss cross_entropy
optimizer adamw {
  lr 3e-4
}
batch 32
accumulate 2
max_steps 80_000
schedule warmup_cosine {
  warmup 5%
}
validation {
  every 1 epoch
}
checkpoint {
  every 2%
}
memory {
  ram_limit 10GB
  pause 2min
}
curriculum {
  phase warm {
    promote when phase.steps >= 500
  }
  phase main {}
}

profile smoke {
  max_steps 60
  model.width 8
  curriculum.warm.promote when phase.steps >= 5
}
"""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plan.train").write_text(SPEC)
    return "plan.train"


def test_percent_warmup_resolves(spec):
    result = run("plan", spec)
    assert result.exit_code == 0, result.output
    assert "schedule   warmup_cosine, warmup 5% of 80,000 steps = 4,000 steps" in result.stdout.splitlines()
    assert "length     80,000 optimizer steps" in result.stdout.splitlines()
    assert "batch      32 per micro-batch x 2 accumulated = 64 samples per optimizer step" in result.stdout


def test_plan_json(spec):
    result = run("plan", spec, "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["settings"]["schedule"]["warmup"] == 4000
    assert plan["settings"]["checkpoint"]["every"] == 1600
    assert plan["settings"]["validation"]["every"] == "1 epoch"  # resolved when the epoch length is known
    assert plan["settings"]["memory"]["ram_limit"] == 10 * 10**9
    assert plan["settings"]["memory"]["pause"] == 120.0
    assert plan["resolved"] == {"schedule.warmup": "5% of 80,000 steps", "checkpoint.every": "2% of 80,000 steps",
                                "log.every": "default: every 100 steps (1% of 80,000, at most 100)"}
    assert plan["settings"]["log"]["every"] == 100  # no log block: a row every 1% of the run, at most 100 steps
    assert plan["components"]["model"]["params"]["width"] == 64
    assert [p["name"] for p in plan["curriculum"][0]["phases"]] == ["warm", "main"]
    assert plan["curriculum"][0]["phases"][0]["promote"] == "phase.steps >= 500"
    assert plan["batch"]["global"] == 64


def test_profile_and_set(spec):
    result = run("plan", spec, "--profile", "smoke", "--set", "optimizer.lr=1e-3", "--set", "model.depth=3", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["profile"] == "smoke" and plan["overrides"] == ["optimizer.lr=1e-3", "model.depth=3"]
    assert plan["components"]["optimizer"]["params"]["lr"] == 1e-3
    assert plan["components"]["model"]["params"]["width"] == 8
    assert plan["components"]["model"]["params"]["depth"] == 3
    assert plan["settings"]["max_steps"] == 60
    assert plan["settings"]["schedule"]["warmup"] == 3  # 5% of the profile's 60 steps
    assert plan["curriculum"][0]["phases"][0]["promote"] == "phase.steps >= 5"
    text = run("plan", spec, "--profile", "smoke").stdout
    assert text.splitlines()[0].endswith("profile smoke")


def test_set_overrides_profile(spec):
    plan = json.loads(run("plan", spec, "-p", "smoke", "--set", "max_steps=100", "--json").stdout)
    assert plan["settings"]["max_steps"] == 100


def test_set_errors_point_at_the_option(spec):
    result = run("plan", spec, "--set", "optimizer.lr=1e-3", "--set", "optimizer.lr=-1")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "<--set 2>:1:14: error[E203]: optimizer.lr must be greater than 0, got -1\n"
        " 1 | optimizer.lr -1\n"
        "   |              ^^\n")
    typo = run("plan", spec, "--set", "optimizr.lr=1")
    assert typo.exit_code == 1
    assert typo.stderr.startswith("<--set 1>:1:1: error[E200]: unknown setting 'optimizr' in the spec")
    assert "did you mean 'optimizer'?" in typo.stderr
    assert run("plan", spec, "--set", "optimizer.lr").stderr.startswith("<--set 1>:1:1: error[E502]")
    assert run("plan", spec, "--set", "optimizer.lr=").stderr.startswith("<--set 1>:1:13: error[E502]")
    syntax = run("plan", spec, "--set", "optimizer.lr=1e-4 2")
    assert syntax.exit_code == 1 and syntax.stderr.startswith("<--set 1>:1:19: error[E100]")
    phase = run("plan", spec, "--set", "curriculum.wram.promote=when step > 3")
    assert phase.stderr.startswith("<--set 1>:1:1: error[E500]: --set targets no setting: there is no phase 'wram'")


def test_set_gate_on_a_phase(spec):
    plan = json.loads(run("plan", spec, "--set", "curriculum.warm.promote=when step > 3", "--json").stdout)
    assert plan["curriculum"][0]["phases"][0]["promote"] == "step > 3"


def test_unknown_profile(spec):
    result = run("plan", spec, "--profile", "smok")
    assert result.exit_code == 1
    assert result.stderr.startswith("plan.train:1:1: error[E501]: no profile 'smok' in plan.train")
    assert "did you mean 'smoke'?" in result.stderr


def test_invalid_spec(spec, tmp_path):
    (tmp_path / "bad.train").write_text(SPEC.replace("batch 32", "batch 0"))
    result = run("plan", "bad.train")
    assert result.exit_code == 1
    assert result.stderr.startswith("bad.train:12:7: error[E203]: batch must be at least 1, got 0")


def test_build_plan_in_process(spec):
    plan = build_plan(load(spec, "smoke"))
    assert plan.settings["schedule"]["warmup"] == 3
    assert plan.effective_batch == 64
    json.dumps(plan.to_json())
