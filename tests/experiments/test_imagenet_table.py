"""Tests for `experiments.reports.imagenet_table` on fabricated runs."""

import csv

import pytest

from convnet_repro.experiments.reports import imagenet_orderings
from convnet_repro.experiments.reports import imagenet_output
from convnet_repro.experiments.reports import imagenet_rows
from convnet_repro.experiments.reports import imagenet_table as it


def _row(family, row, protocol, top1, top5=None, n=1, sources="a", **kw):
    views = {"center": 1, "ten_crop": 10, "multi_crop": 144}[protocol]
    return imagenet_rows.Row(
        family=family,
        row=row,
        protocol=protocol,
        num_models=n,
        num_views=views,
        num_images=100,
        top1_error=top1,
        top5_error=top1 / 2 if top5 is None else top5,
        sources=sources,
        **kw,
    )


@pytest.fixture
def rows():
    return [
        _row("ResNet", "ResNet-18", "ten_crop", 30.0, sources="r"),
        _row("AlexNet", "1 CNN", "center", 50.0, sources="a0", order=0),
        _row("AlexNet", "1 CNN", "ten_crop", 45.0, sources="a0", order=1),
        _row(
            "AlexNet",
            "5 CNNs",
            "ten_crop",
            40.0,
            n=5,
            sources="a0,a1,a2,a3,a4",
            order=2,
            paper_top1_error=38.1,
            paper_top5_error=16.4,
        ),
        _row("VGG", "VGG-A", "ten_crop", 47.0, sources="v"),
        _row("Conv kind", "unshared conv5", "ten_crop", 60.0, sources="u"),
    ]


def test_build_table_sorts_by_family_and_keeps_newest(rows):
    old = _row("VGG", "VGG-A", "ten_crop", 99.0, sources="v", start_time=-1)
    table = imagenet_rows.build_table(rows + [old])
    assert [r.family for r in table] == [
        "AlexNet",
        "AlexNet",
        "AlexNet",
        "VGG",
        "ResNet",
        "Conv kind",
    ]
    assert [r.row for r in table[:3]] == ["1 CNN", "1 CNN", "5 CNNs"]
    assert table[3].top1_error == 47.0  # the newer run wins


def test_build_table_keeps_one_run_per_row_and_protocol():
    a = _row("AlexNet", "1 CNN", "center", 50.0, start_time=1)
    b = _row("AlexNet", "1 CNN", "center", 48.0, start_time=2)
    table = imagenet_rows.build_table([a, b])
    assert len(table) == 1 and table[0].top1_error == 48.0


def test_build_table_refuses_to_mix_training_lengths():
    full = _row("AlexNet", "1 CNN", "center", 50.0, start_time=1, fraction=1.0)
    vgg = _row("VGG", "VGG-A", "center", 47.0, start_time=2, fraction=1.0)
    # A shortened re-run of one row replaces that row only: refused.
    short = _row("VGG", "VGG-A", "center", 70.0, start_time=3, fraction=0.25)
    with pytest.raises(ValueError, match=r"fraction 0.25: \['VGG-A'\]"):
        imagenet_rows.build_table([full, vgg, short])
    # Re-running every row at the same length is one table again.
    again = _row(
        "AlexNet", "1 CNN", "center", 66.0, start_time=4, fraction=0.25
    )
    table = imagenet_rows.build_table([full, vgg, short, again])
    assert [r.fraction for r in table] == [0.25, 0.25]


def test_check_orderings(rows):
    checks = imagenet_orderings.check_orderings(imagenet_rows.build_table(rows))
    by_claim = {}
    for c in checks:
        by_claim.setdefault(c["claim"], []).append(c)
    ens = by_claim["ensemble < single model"]
    assert [(c["better"], c["worse"], c["holds"]) for c in ens] == [
        ("5 CNNs (10 crops)", "1 CNN (10 crops)", True)
    ]
    crops = by_claim["multi-crop < fewer crops"]
    assert [(c["better"], c["holds"]) for c in crops] == [
        ("1 CNN (10 crops)", True)
    ]
    deep = {
        (c["better"], c["holds"]) for c in by_claim["deeper family < AlexNet"]
    }
    # VGG-A (47) loses to 1 CNN 10-crop (45); ResNet-18 (30) wins.
    assert deep == {
        ("VGG-A (10 crops)", False),
        ("ResNet-18 (10 crops)", True),
    }
    # The conv-kind rows take part in no ordering.
    assert all("unshared" not in c["better"] for c in checks)


def test_ties_are_not_counted_as_holding():
    a = _row("GoogLeNet", "G", "center", 90.0, sources="g")
    b = _row("GoogLeNet", "G", "ten_crop", 90.0, sources="g")
    (check,) = imagenet_orderings.check_orderings([a, b])
    assert check["tie"] and not check["holds"]
    md = imagenet_output.format_markdown([a, b], [check])
    assert "lower error in 0/1 pairs, 1 tie(s)" in md
    assert "  - tie (top-5): G" in md


def test_googlenet_crop_ordering_is_judged_on_top5_its_table_metric():
    """Szegedy et al. 2015 Table 3 reports top-5 only: 144 crops beating
    one crop on top-5 holds even where top-1 says otherwise."""
    g1 = _row("GoogLeNet", "G", "center", 60.0, top5=20.0, sources="g")
    g144 = _row("GoogLeNet", "G", "multi_crop", 61.0, top5=18.0, sources="g")
    (check,) = imagenet_orderings.check_orderings([g1, g144])
    assert check["metric"] == "top5_error" and check["holds"]
    assert (check["better_error"], check["worse_error"]) == (18.0, 20.0)
    # AlexNet's Table 2 leads with top-1: the same numbers fail there.
    a1 = _row("AlexNet", "A", "center", 60.0, top5=20.0, sources="a")
    a10 = _row("AlexNet", "A", "ten_crop", 61.0, top5=18.0, sources="a")
    (check,) = imagenet_orderings.check_orderings([a1, a10])
    assert check["metric"] == "top1_error" and not check["holds"]


def test_cross_family_ordering_uses_top5_when_one_table_has_only_top5():
    alex = _row("AlexNet", "A", "ten_crop", 50.0, top5=25.0, sources="a")
    goog = _row("GoogLeNet", "G", "ten_crop", 55.0, top5=20.0, sources="g")
    res = _row("ResNet", "R", "ten_crop", 55.0, top5=20.0, sources="r")
    checks = {
        c["better"]: c
        for c in imagenet_orderings.check_orderings([alex, goog, res])
    }
    assert checks["G (10 crops)"]["metric"] == "top5_error"
    assert checks["G (10 crops)"]["holds"]
    assert checks["R (10 crops)"]["metric"] == "top1_error"
    assert not checks["R (10 crops)"]["holds"]


def test_rows_of_other_families_follow_their_paper_numbers():
    only5 = _row("BN", "x", "center", 1.0, paper_top5_error=7.8)
    both = _row("BN", "y", "center", 1.0, paper_top1_error=25.2)
    assert imagenet_orderings.paper_metric(only5) == "top5_error"
    assert imagenet_orderings.paper_metric(both) == "top1_error"


def test_markdown_and_csv(rows, tmp_path):
    table = imagenet_rows.build_table(rows)
    checks = imagenet_orderings.check_orderings(table)
    paths = imagenet_output.write_outputs(table, checks, tmp_path, title="T")
    assert [p.name for p in paths] == ["table.md", "table.csv", "errors.png"]
    md = paths[0].read_text()
    assert (
        "| AlexNet | 5 CNNs | 10 crops | 5 | 10 | 100 | 40.00 | 38.10 |" in md
    )
    assert (
        "FAILS (top-1): VGG-A (10 crops) 47.00 vs 1 CNN (10 crops) 45.00" in md
    )
    with paths[1].open() as f:
        got = list(csv.DictReader(f))
    assert len(got) == len(table)
    assert float(got[2]["paper_top5_error"]) == 16.4
    assert got[0]["paper_top1_error"] == ""
    assert paths[2].stat().st_size > 1000


@pytest.mark.parametrize("scale", ["mini", "mini-long"])
def test_report_from_fabricated_mlflow_runs(tmp_path, scale):
    import mlflow

    from convnet_repro.experiments.evaluation import records as ev

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    try:
        for name, protocol, top1, n, sources in [
            ("1 CNN", "ten_crop", 42.0, 1, ["a0"]),
            ("5 CNNs", "ten_crop", 39.0, 5, ["a0", "a1", "a2", "a3", "a4"]),
            ("ResNet-18", "ten_crop", 30.0, 1, ["r"]),
        ]:
            result = {
                "top1_error": top1,
                "top5_error": top1 / 3,
                "num_models": n,
                "num_views": 10,
                "num_images": 50,
            }
            family = "ResNet" if name.startswith("ResNet") else "AlexNet"
            ev.log_evaluation(
                result,
                sources,
                protocol,
                experiment_name="fake_table",
                row=name,
                tags={"table": "imagenet", "scale": scale, "family": family},
            )
        # Runs of the other scales must not leak into this table.
        for other in {"mini", "mini-long", "full"} - {scale}:
            ev.log_evaluation(
                {**result, "top1_error": 1.0},
                ["x"],
                "center",
                experiment_name="other",
                row=f"ResNet-152 {other}",
                tags={"table": "imagenet", "scale": other, "family": "ResNet"},
            )
        out = it.report(scale=scale, results_dir=tmp_path / "res")
    finally:
        mlflow.set_tracking_uri(previous)
    assert [r["row"] for r in out["rows"]] == ["1 CNN", "5 CNNs", "ResNet-18"]
    assert all(c["holds"] for c in out["checks"])
    table = (tmp_path / "res" / scale / "table.md").read_text()
    assert "top-5 (ours, weak†)" in table  # 10 classes at both mini scales


def test_report_without_runs_message(tmp_path):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    try:
        with pytest.raises(ValueError, match="Received: scale='full'"):
            it.report(scale="full", results_dir=tmp_path)
    finally:
        mlflow.set_tracking_uri(previous)


def test_report_puts_members_beside_the_ensemble_and_top5_as_weak(tmp_path):
    """The 5 CNNs row gets its members' own top-1 (mean, t-interval,
    min-max) from their training runs; at mini scale the top-5 column is
    marked weak and GoogLeNet's top-5 ordering is listed, never counted."""
    import math

    import mlflow
    from scipy import stats

    from convnet_repro.experiments.engine import metric_keys as mk
    from convnet_repro.experiments.evaluation import records as ev

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    member_errors = [0.40, 0.44, 0.46, 0.50, 0.45]
    try:
        mlflow.set_experiment("members")
        ids = []
        for error in member_errors:
            with mlflow.start_run() as run:
                mlflow.log_metric(mk.VAL_TOP1_ERROR, error, step=400)
                ids.append(run.info.run_id)
        for name, family, top1, top5, sources in [
            ("AlexNet, 1 CNN", "AlexNet", 44.0, 20.0, ids[:1]),
            ("AlexNet, 5 CNNs", "AlexNet", 38.0, 15.0, ids),
            ("GoogLeNet", "GoogLeNet", 50.0, 12.0, ["g"]),
        ]:
            result = {
                "top1_error": top1,
                "top5_error": top5,
                "num_models": len(sources),
                "num_views": 10,
                "num_images": 50,
            }
            ev.log_evaluation(
                result,
                sources,
                "ten_crop",
                experiment_name="fake_table",
                row=name,
                tags={"table": "imagenet", "scale": "mini", "family": family},
            )
        out = it.report(scale="mini", results_dir=tmp_path / "res")
    finally:
        mlflow.set_tracking_uri(previous)
    md = (tmp_path / "res" / "mini" / "table.md").read_text()
    pct = [100 * e for e in member_errors]
    mean = sum(pct) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in pct) / 4)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert (
        f"| AlexNet, 5 CNNs | 10 crops | 38.00 | {mean:.2f} "
        f"[{mean - half:.1f}, {mean + half:.1f}] | 40.00-50.00 | 5 of 5 |"
    ) in md
    (ensemble_id,) = [r["run_id"] for r in out["rows"] if r["num_models"] > 1]
    assert out["members"][ensemble_id]["n"] == 5
    assert "top-5 (ours, weak†)" in md and "† Top-5 of 10 classes" in md
    (deep,) = [c for c in out["checks"] if c["claim"].startswith("deeper")]
    assert deep["metric"] == "top5_error" and deep["holds"]  # 12 < 20
    assert deep["weak"] and deep["verdict"].startswith("weak")
    assert (
        "**deeper family < AlexNet**: lower error in 0/0 pairs, "
        "1 on weak top-5 not counted"
    ) in md
    # The top-1 ensemble check is still counted.
    assert "**ensemble < single model**: lower error in 1/1 pairs" in md


def _seed_runs(client, parent_name, errors, variant=None):
    """A fabricated training parent with one finished child per seed."""
    import mlflow

    from convnet_repro.experiments.engine import metric_keys as mk

    mlflow.set_experiment(parent_name)
    ids = []
    with mlflow.start_run(run_name=parent_name):
        for seed, error in enumerate(errors):
            tags = {
                "seed": str(seed),
                **({"variant": variant} if variant else {}),
            }
            with mlflow.start_run(nested=True, tags=tags) as child:
                mlflow.log_metric(mk.VAL_TOP1_ERROR, error, step=900)
                ids.append(child.info.run_id)
    return ids


def test_report_puts_single_models_beside_their_seeds(tmp_path):
    """A single-model row's seeds (its source's finished siblings of the
    same variant) get a t-interval, and the centre-crop depth check a
    Welch test over seeds beside the per-image test of the scored models;
    an unfinished seed and another variant's runs are left out."""
    import mlflow
    from scipy import stats

    from convnet_repro.experiments.engine import metric_keys as mk
    from convnet_repro.experiments.evaluation import records as ev

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    alex = [0.30, 0.32, 0.29, 0.31, 0.33]
    resnet = [0.20, 0.22, 0.21]
    try:
        client = mlflow.MlflowClient()
        alex_ids = _seed_runs(client, "alex", alex)
        resnet_ids = _seed_runs(client, "resnet", resnet, variant="conv")
        parent = client.get_run(resnet_ids[0]).data.tags["mlflow.parentRunId"]
        exp = client.get_run(parent).info.experiment_id
        for tags in (  # a killed seed, and another variant's seed 0
            {"seed": "3", "variant": "conv"},
            {"seed": "0", "variant": "unshared"},
        ):
            run = client.create_run(
                exp, tags={"mlflow.parentRunId": parent, **tags}
            )
            client.log_metric(run.info.run_id, mk.VAL_TOP1_ERROR, 0.9)
            if tags["variant"] == "unshared":
                client.set_terminated(run.info.run_id)
        for name, family, protocol, top1, sources in [
            ("AlexNet, 1 CNN", "AlexNet", "center", 31.0, alex_ids[:1]),
            ("AlexNet, 1 CNN", "AlexNet", "ten_crop", 30.0, alex_ids[:1]),
            ("ResNet-18", "ResNet", "center", 21.0, resnet_ids[:1]),
            ("ResNet-18", "ResNet", "ten_crop", 20.0, resnet_ids[:1]),
        ]:
            ev.log_evaluation(
                {
                    "top1_error": top1,
                    "top5_error": 5.0,
                    "num_models": 1,
                    "num_views": 1 if protocol == "center" else 10,
                    "num_images": 50,
                },
                sources,
                protocol,
                experiment_name="fake_table",
                row=name,
                tags={
                    "table": "imagenet",
                    "scale": "mini-long",
                    "family": family,
                },
            )
        out = it.report(scale="mini-long", results_dir=tmp_path / "res")
    finally:
        mlflow.set_tracking_uri(previous)
    md = (tmp_path / "res" / "mini-long" / "table.md").read_text()
    r = stats.ttest_ind(
        [100 * e for e in resnet], [100 * e for e in alex], equal_var=False
    )
    mean = 100 * sum(resnet) / 3
    half = stats.t.ppf(0.975, 2) * 100 * stats.tstd(resnet) / 3**0.5
    assert (
        f"| ResNet-18 | 21.00 | centre crop | {mean:.2f} [{mean - half:.1f}, "
        f"{mean + half:.1f}] | 20.00-22.00 | 3 of 4 (seeds 0, 1, 2) |"
    ) in md
    assert "| AlexNet, 1 CNN | 31.00 | centre crop | 31.00 [" in md
    deep = [c for c in out["checks"] if c["claim"] == "deeper family < AlexNet"]
    tested = [c for c in deep if "over_seeds" in c]
    assert len(deep) == 2 and len(tested) == 1  # the centre-crop pair only
    s = tested[0]["over_seeds"]
    assert s["p_value"] == pytest.approx(r.pvalue)
    assert s["difference"] == pytest.approx(mean - 31.0)
    assert s["verdict"] == "holds" and (s["n_better"], s["n_worse"]) == (3, 5)
    assert "over seeds (Welch): holds 1" in md
    assert f"over seeds (3 vs 5): {mean - 31.0:+.2f}" in md


def test_summary_line_counts_every_verdict():
    """The CLI's last line counts each per-image verdict, the pairs that
    could not be judged, and the weak top-5 pairs apart."""
    checks = [
        {"verdict": "holds"},
        {"verdict": "holds"},
        {"verdict": "fails"},
        {"verdict": "not judged (no stored predictions)"},
        {},  # never judged
        {"verdict": "weak (top-5 of <= 10 classes), not judged", "weak": True},
    ]
    line = it.summary_line({"rows": [1, 2, 3], "checks": checks}, "out/")
    assert line == (
        "3 rows; 6 ordered pairs: holds 2, not significant 0, fails 1, "
        "not judged 2; weak top-5 1 -> out/"
    )
