"""Expectations judged at a span, at the end or throughout, failing or warning; micro-step
spans and run-relative gates, as a run lives them."""

from .conftest import FAST_SPEC, events, run_inproc, write_spec


def _run(tmp_path, extra: str, base: str = FAST_SPEC):
    spec = write_spec(tmp_path, base + extra)
    run_dir = tmp_path / "run"
    return run_inproc(spec, run_dir), run_dir


def _final(run_dir) -> dict:
    return {e["expect"]: e for e in events(run_dir, "expectation") if e.get("final")}


def test_a_broken_warn_expectation_is_an_event_and_the_run_goes_on(tmp_path):
    outcome, run_dir = _run(tmp_path, "expect train.loss < 0 by 5 steps warn\n")
    assert outcome.status == "finished" and outcome.step == 12
    broken = [e for e in events(run_dir, "expectation") if not e.get("final")]
    assert [(e["step"], e["outcome"], e["severity"]) for e in broken] == [(5, "broken", "warn")]
    assert "train.loss" in broken[0]["values"]
    assert _final(run_dir)["expect train.loss < 0 by 5 steps warn"]["outcome"] == "broken"
    assert not events(run_dir, "expectation_failed")


def test_throughout_is_judged_after_every_step_and_said_once_per_stretch(tmp_path):
    # grad_norm is never above 1e6 and never below 0: one holds, one breaks from step 1 on
    outcome, run_dir = _run(tmp_path, "expect train.grad_norm < 1e6 throughout\n"
                                      "expect train.grad_norm < 0 throughout warn\n")
    assert outcome.status == "finished"
    final = _final(run_dir)
    assert final["expect train.grad_norm < 1e6 throughout"]["outcome"] == "held"
    warn = final["expect train.grad_norm < 0 throughout warn"]
    assert warn["outcome"] == "broken" and warn["broken_steps"] == 12
    said = [e for e in events(run_dir, "expectation") if not e.get("final")]
    assert [e["step"] for e in said] == [1]  # one event for a stretch of 12 broken steps


def test_a_broken_throughout_fail_stops_the_run_at_that_step(tmp_path):
    outcome, run_dir = _run(tmp_path, "expect step < 4 throughout\n")
    assert outcome.status == "failed"
    assert outcome.message.startswith("expectation broken at step 4: expect step < 4 throughout (step=4")
    assert [e["step"] for e in events(run_dir, "expectation_failed")] == [4]


def test_throughout_waits_while_its_values_are_unknown(tmp_path):
    # no validation: val.loss is never known, so a throughout expectation on it never breaks
    base = FAST_SPEC + "validation { every 100 steps }\n"
    outcome, run_dir = _run(tmp_path, "expect val.loss < 0 throughout\n", base)
    assert outcome.status == "finished"
    assert _final(run_dir)["expect val.loss < 0 throughout"]["outcome"] == "unknown"


def test_a_broken_at_end_expectation_fails_after_the_final_checkpoint_is_saved(tmp_path):
    outcome, run_dir = _run(tmp_path, "expect train.loss < 0 at end\n")
    assert outcome.status == "failed"
    assert outcome.message.startswith("expectation broken at the end of the run: expect train.loss < 0")
    finals = [e for e in events(run_dir, "checkpoint") if e["kind"] == "final"]
    assert finals and finals[-1]["step"] == 12  # nothing the run made is lost


def test_at_end_warn_holds_and_is_reported(tmp_path):
    outcome, run_dir = _run(tmp_path, "expect train.loss < 100 at end warn\n")
    assert outcome.status == "finished"
    assert _final(run_dir)["expect train.loss < 100 at end warn"]["outcome"] == "held"


def test_micro_step_spans_act_at_the_step_that_passes_each_multiple(tmp_path):
    # accumulate 2: 6 micro-steps pass at steps 3, 6, 9, 12; 5 micro-steps at 3, 5, 8, 10, 12
    base = FAST_SPEC.replace("every 4 steps", "every 6 micro_steps")
    outcome, run_dir = _run(tmp_path, "expect train.loss < 0 by 7 micro_steps warn\n", base)
    assert outcome.status == "finished"
    regular = [e["step"] for e in events(run_dir, "checkpoint") if e["kind"] == "regular"]
    assert regular == [3, 6, 9, 12]
    broken = [e for e in events(run_dir, "expectation") if not e.get("final")]
    assert [e["step"] for e in broken] == [4]  # micro-batches 7 and 8 are step 4's


def test_phase_micro_steps_and_run_progress_promote(tmp_path):
    base = FAST_SPEC.replace("""curriculum {
  phase a { promote when phase.steps >= 3 }
  phase b {}
}""", """curriculum {
  phase a { promote when phase.micro_steps >= 5 micro_steps }
  phase b { promote when run.progress >= 75% }
  phase c {}
}""")
    outcome, run_dir = _run(tmp_path, "", base)
    assert outcome.status == "finished"
    moves = [(e["step"], e["old"], e["new"]) for e in events(run_dir, "phase")]
    assert moves == [(3, "a", "b"), (9, "b", "c")]  # 6 micro-batches >= 5; 9 of 12 steps is 75%


def test_outcomes_survive_a_resume(interrupted):
    spec, run_dir = interrupted(5, FAST_SPEC + "expect train.grad_norm < 0 throughout warn\n")
    assert run_inproc(spec, run_dir).code == 0
    final = _final(run_dir)["expect train.grad_norm < 0 throughout warn"]
    assert final["outcome"] == "broken" and final["broken_steps"] == 12  # 5 before the stop, 7 after
    said = [e for e in events(run_dir, "expectation") if not e.get("final")]
    assert [e["step"] for e in said] == [1]  # the stretch went on across the resume: said once
