"""spec/suggest.py: the whole dotted path of a setting someone half-remembered.

tests/test_cli_hints.py shows the hint reaching `--set` users; these are the paths it
chooses from and how it picks among them.
"""

from __future__ import annotations

from specrun.spec.suggest import full_path_hint, setting_paths

RULE_MLP = {"task": {"type": "rule_classification"}, "model": {"type": "mlp"}, "optimizer": {"type": "adamw"}}


def test_the_paths_include_the_named_components_parameters():
    paths = setting_paths(RULE_MLP)
    assert {"max_steps", "checkpoint.every", "model.width", "model.depth", "optimizer.lr",
            "task.features"} <= set(paths)
    assert paths == sorted(set(paths))
    lm = setting_paths({"model": {"type": "causal_lm"}})
    assert "model.heads" in lm and "model.heads" not in paths


def test_no_component_or_an_unknown_one_adds_no_parameters():
    bare = setting_paths({})
    assert setting_paths({"model": {"type": "no_such_model"}}) == bare == setting_paths({"model": "mlp"})
    assert not any(p.startswith("model.") for p in bare)


def test_curriculum_and_expectations_are_never_offered():
    assert not any(p.split(".")[0] in ("curriculum", "expect") for p in setting_paths(RULE_MLP))
    assert full_path_hint("curriculum.x", RULE_MLP) is None


def test_a_bare_or_misspelt_leaf_gets_its_whole_path():
    assert full_path_hint("weight_decay", RULE_MLP) == "did you mean 'optimizer.weight_decay'?"
    assert full_path_hint("widht", RULE_MLP) == "did you mean 'model.width'?"
    assert full_path_hint("model.widht", RULE_MLP) == "did you mean 'model.width'?"
    assert full_path_hint("heads", {"model": {"type": "causal_lm"}}) == "did you mean 'model.heads'?"
    assert full_path_hint("heads", RULE_MLP) is None  # mlp has no heads: nothing to point at


def test_a_leaf_in_several_blocks_offers_each():
    assert full_path_hint("dir", RULE_MLP) == "did you mean 'checkpoint.dir' or 'profiler.dir'?"
    assert full_path_hint("every", RULE_MLP) == \
        "did you mean 'checkpoint.every' or 'log.every' or 'validation.every'?"


def test_nothing_close_gives_no_hint():
    assert full_path_hint("zzzzqq", RULE_MLP) is None
