"""`make mini-choices`: the spec, its configs and its table maths."""

import csv

import pytest
from omegaconf import OmegaConf

from convnet_repro.experiments import choices
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.config_checks import validate_config

SPEC = choices.load_spec()
CANDIDATES = [
    (name, cand)
    for name, q in SPEC["questions"].items()
    for cand in q["candidates"]
]


def _key(override):
    return override.lstrip("+~").split("=")[0]


def _value(override):
    return OmegaConf.create(f"v: {override.split('=', 1)[1]}").v


def _setting(cfg, override):
    """The plain value `cfg` holds at the key `override` sets."""
    got = OmegaConf.select(cfg, _key(override))
    return OmegaConf.to_container(OmegaConf.create({"v": got}))["v"]


@pytest.mark.parametrize("name,candidate", CANDIDATES)
def test_candidate_config_is_scored_on_the_tuning_split_only(name, candidate):
    cfg = compose(choices.candidate_overrides(SPEC, name, candidate))
    validate_config(cfg)
    assert cfg.data.eval_split == "tuning"
    assert cfg.data.tuning_per_class == SPEC["tuning_per_class"]
    assert cfg.report is None  # no evaluation hook reads Imagenette val
    assert list(cfg.seeds) == SPEC["seeds"]
    assert cfg.experiment_name == f"choices_{name}"
    for override in SPEC["questions"][name]["candidates"][candidate]:
        assert _setting(cfg, override) == _value(override), override


@pytest.mark.parametrize("name", sorted(SPEC["questions"]))
def test_chosen_candidate_is_what_the_experiment_config_trains(name):
    """The choice being re-made is the one the default tier really uses."""
    q = SPEC["questions"][name]
    default = compose([f"experiment={q['experiment']}"])
    for override in q["candidates"][q["chosen"]]:
        assert _setting(default, override) == _value(override), (
            name,
            override,
        )


def test_every_question_has_an_alternative_that_differs():
    for name, q in SPEC["questions"].items():
        settings = {tuple(v) for v in q["candidates"].values()}
        assert len(settings) == len(q["candidates"]) >= 2, name


def test_spec_refuses_a_chosen_candidate_it_does_not_list(tmp_path):
    bad = OmegaConf.load(choices.SPEC)
    bad.questions.alexnet_init.chosen = "typo"
    path = tmp_path / "spec.yaml"
    OmegaConf.save(bad, path)
    with pytest.raises(ValueError, match="chooses 'typo'"):
        choices.load_spec(path)


def test_cli_names_an_unknown_question(capsys):
    with pytest.raises(SystemExit):
        choices.main(["--question", "nope"])
    assert "unknown question(s) ['nope']" in capsys.readouterr().err


def _found(values):
    return {
        "values": values,
        "run_ids": [f"{i:032x}" for i in range(len(values))],
        "steps": [200],
        "minutes": 3.0,
        "parent_run_id": "p" * 32,
    }


def test_summary_rows_and_verdicts():
    rows = choices.summarize(
        "q",
        "b",
        {
            "a": _found([0.10, 0.11, 0.09]),  # clearly worse than b
            "b": _found([0.30, 0.32, 0.31]),
            "c": _found([0.29, 0.33, 0.31]),  # the same as b
        },
        num_images=500,
    )
    by = {r["candidate"]: r for r in rows}
    assert [r["candidate"] for r in rows] == ["b", "a", "c"]  # chosen first
    assert by["b"]["chosen"] == "yes" and by["b"]["verdict"] == ""
    assert by["a"]["tuning_top1_pct"] == 10.0
    assert by["a"]["minus_chosen_pts"] == -21.0
    assert by["a"]["verdict"] == "chosen better: holds"
    assert by["c"]["verdict"] == "chosen better: not significant"
    # The interval holds the tuning set's binomial error: wider than seeds.
    lo, hi = (float(x) for x in by["b"]["interval_95"].strip("[]").split(","))
    binomial_half = 1.96 * (0.31 * 0.69 / 500) ** 0.5 * 100
    assert hi - lo > 2 * binomial_half - 0.1
    worse = choices.summarize(
        "q",
        "a",
        {"a": _found([0.1, 0.11, 0.09]), "b": _found([0.3, 0.31, 0.29])},
        500,
    )
    assert worse[1]["verdict"] == "chosen better: fails"
    assert set(rows[0]) == set(choices.COLUMNS)


@pytest.mark.slow
def test_cli_trains_every_candidate_and_writes_the_table(tmp_path):
    """One question end to end, 2 seeds x 25 steps, in a temporary store."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path}/mlruns.db"
    compose([], tmp_path=tmp_path)  # creates the empty store
    args = [
        "--question",
        "googlenet_init",
        "--out",
        str(tmp_path / "out"),
        "seeds=[0,1]",
        "trainer.steps=25",
        "trainer.eval_every_steps=25",
        "trainer.checkpoint_every_steps=25",
        "trainer.progress=none",
        f"tracking.uri={store}",
        f"tracking.artifact_location={tmp_path}/art",
        f"paths.checkpoint_dir={tmp_path}/ck",
        f"paths.output_dir={tmp_path}/o",
    ]
    choices.main(args)
    with open(tmp_path / "out" / "choices.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["candidate"] for r in rows] == ["he_normal", "glorot_uniform"]
    client = MlflowClient(store)
    for row in rows:
        assert row["seeds"] == "2" and row["steps"] == "25"
        children = row["child_run_ids"].split()
        assert len(children) == 2
        parent = client.get_run(row["parent_run_id"])
        assert parent.data.params["data.eval_split"] == "tuning"
        assert 0.0 <= float(row["tuning_top1_pct"]) <= 100.0
    text = (tmp_path / "out" / "choices.md").read_text()
    assert "## googlenet_init" in text and "alexnet_init" not in text
    # A rerun trains nothing more: the finished runs are read back.
    before = len(client.search_runs([parent.info.experiment_id]))
    choices.main(args)
    assert len(client.search_runs([parent.info.experiment_id])) == before
