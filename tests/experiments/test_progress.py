"""Progress lines, the closing summary and the parent's seed-mean curves."""

import io
import pathlib

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import progress
from convnet_repro.experiments.engine import summary
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _lines_progress(**kwargs):
    stream, clock = io.StringIO(), FakeClock()
    p = progress.ExperimentProgress(
        "exp", [100, 100], "lines", stream=stream, clock=clock, **kwargs
    )
    return p, stream, clock


def test_lines_every_fraction_with_eta_and_no_carriage_returns():
    p, stream, clock = _lines_progress(every_fraction=0.1, every_s=1e9)
    p.begin_run(1, "a-seed0")
    for step in range(10, 101, 10):  # 1 s per 10 steps
        clock.now += 1
        p.update(step, loss=0.5, metric=("val/top1_accuracy", 0.9))
    p.end_run("FINISHED")
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # 10 steps = 5% of 200: a line at every second update; the run's last
    # step is the end's line.
    assert len(lines) == 5
    assert lines[0].startswith("exp | run 1/2 a-seed0 | step 20/100 | 10%")
    # 20 of 200 steps in 2 s: 180 steps left at 10 steps/s.
    assert "elapsed 00:02 | ETA 00:18" in lines[0]
    assert "loss 0.5 | val/top1_accuracy 0.9" in lines[0]
    assert lines[-1].endswith("| finished")
    assert "step 100/100 | 50%" in lines[-1]


def test_lines_every_seconds_and_second_run_counts_the_first():
    p, stream, clock = _lines_progress(every_fraction=1.0, every_s=30)
    p.begin_run(2, "b-seed0", start_step=0)
    clock.now += 10
    p.update(10)  # 10 s: no line yet
    clock.now += 25
    p.update(20)  # 35 s since the start: a line
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "run 2/2 b-seed0 | step 20/100 | 60%" in lines[0]


def test_resumed_and_skipped_runs_say_so():
    p, stream, _ = _lines_progress()
    p.begin_run(1, "a", start_step=100)
    p.end_run(skipped=True)
    p.begin_run(2, "b", start_step=40)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("skipped (finished before)")
    assert lines[1].endswith("| resumed") and "step 40/100 | 70%" in lines[1]


def test_bar_mode_draws_one_bar_and_none_mode_writes_nothing():
    stream = io.StringIO()
    p = progress.ExperimentProgress("exp", [10, 10], "bar", stream=stream)
    p.begin_run(1, "a")
    p.update(10, loss=1.0)
    p.end_run()
    p.begin_run(2, "b")
    p.update(10, metric=("val/top1_accuracy", 0.5))
    p.close()
    assert "exp run 2/2 b" in stream.getvalue()
    assert "20/20" in stream.getvalue()
    quiet = io.StringIO()
    q = progress.ExperimentProgress("exp", [10], "none", stream=quiet)
    q.begin_run(1, "a")
    q.update(10)
    q.end_run()
    assert quiet.getvalue() == ""
    # auto: a StringIO is no terminal.
    auto = progress.ExperimentProgress("exp", [10], "auto", stream=quiet)
    assert auto.mode == "lines"


def test_bad_mode_names_the_setting():
    with pytest.raises(ValueError, match="trainer.progress"):
        progress.ExperimentProgress("exp", [10], "loud")


def write_table_report(cfg, parent_run_id, out_dir):
    """A `report:` target that writes a table and says so, as reports do."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("| Network | acc |\n|---|---|\n| a | 1 |\n")
    (out / "fig.png").write_bytes(b"png")
    return {"written": [str(out / "table.md"), str(out / "fig.png")]}


def test_experiment_prints_lines_summary_and_logs_variant_curves(
    tmp_path, capsys
):
    cfg = compose(
        [
            "experiment=smoke",
            "trainer.progress=lines",
            "trainer.steps=20",
            "trainer.eval_every_steps=10",
            "trainer.checkpoint_every_steps=10",
            "variants={a: {optimizer.learning_rate: 0.1}}",
            "seeds=[0,1]",
            "tracking.log_model=false",
            "tracking.log_figures=false",
            "+report._target_=tests.experiments.test_progress."
            "write_table_report",
            f"+report.out_dir={tmp_path}/report",
        ],
        tmp_path=tmp_path,
    )
    result = train_lib.train(cfg)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("smoke | run ")]
    assert "\r" not in err
    # 40 steps: a line every 5% (each execution of 5 steps), the last
    # execution of each run being its end line.
    assert len(lines) == 8
    assert "run 1/2 a-seed0 | step 5/20 | 12%" in lines[0]
    assert "run 2/2 a-seed1 | step 20/20 | 100%" in lines[-1]
    assert lines[-1].endswith("| finished")

    client = MlflowClient()
    parent_id = result["run_id"]
    text = summary.format_summary(cfg, result, client)
    assert f"Parent run: {parent_id}" in text
    assert f"{tmp_path}/report/table.md" in text
    assert f"{tmp_path}/report/fig.png" in text
    assert "| a | 1 |" in text  # the table itself
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}" in text
    assert f"/runs/{parent_id}" in text
    for name in ("a-seed0", "a-seed1"):
        assert name in text
    assert "report" not in summary.json_result(result)

    # The parent's curve per variant = the mean of its seeds' histories.
    kids = client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
    )
    assert sorted(k.info.run_name for k in kids) == ["a-seed0", "a-seed1"]
    key = "val/top1_accuracy"
    for variant in ("a",):
        seeds = [k for k in kids if k.data.tags["variant"] == variant]
        histories = [
            {
                m.step: m.value
                for m in client.get_metric_history(k.info.run_id, key)
            }
            for k in seeds
        ]
        curve = client.get_metric_history(parent_id, f"curve/{key}/{variant}")
        assert sorted(m.step for m in curve) == [10, 20]
        for m in curve:
            assert m.value == pytest.approx(
                np.mean([h[m.step] for h in histories])
            )
        assert "smoke" in seeds[0].data.tags["mlflow.note.content"]
    parent = client.get_run(parent_id)
    assert "engine smoke test" in parent.data.tags["mlflow.note.content"]
