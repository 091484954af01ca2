"""Recipes that differ in a few keys share a base (issue #19): ``base:`` resolved."""

import pytest

from composite_tasking.training.recipe import RecipeError, load_recipe, recipe_data


def test_the_paper_table_recipes_are_the_r1r_recipe_but_name_model_and_rule():
    base = load_recipe("table-ctn-r1r").to_dict()
    for name in ("table-ctn-r2", "table-ctn-r3", "table-ctn-rrnd", "table-mhn", "table-stn"):
        r = load_recipe(name).to_dict()
        differing = sorted(k for k in base if r[k] != base[k])
        assert set(differing) <= {"name", "model", "rule"} and r["name"] == name, (name, differing)
        assert "base" not in recipe_data(name)[0]


def test_a_base_is_a_file_beside_the_recipe_or_a_built_in_name_and_keys_replace_whole(tmp_path):
    (tmp_path / "common.yaml").write_text("base: ctn-synthetic-cpu\nepochs: 3\noptimizer: {lr_decoder: 1.0e-4}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: common.yaml\nname: child\nepochs: 5\n")
    r = load_recipe(child)
    assert r.name == "child" and r.epochs == 5 and r.source == str(child)
    assert r.optimizer == {"lr_decoder": 1.0e-4}  # the base's whole mapping, not merged with its own base's
    assert r.rule == load_recipe("ctn-synthetic-cpu").rule  # from two bases up


@pytest.mark.parametrize("text, says", [("base: b.yaml\n", "cycle"), ("base: 3\n", "names a recipe"),
                                        ("base: nowhere.yaml\n", "nowhere.yaml"), ("base: no-such\n", "built-in")])
def test_a_bad_base_is_named(tmp_path, text, says):
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(RecipeError, match=says):
        load_recipe(tmp_path / "a.yaml")
