"""The ablation: cells, loss switches, seeds and the mean ± std report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from smallcorpus import SmallCorpus

from emotions.config import (
    TRAIN_EXECUTION_FIELDS,
    AblationCell,
    ConfigError,
    TrainConfig,
    parse_params,
)
from emotions.stages.ablate import (
    ablate,
    cells_of,
    params_for_cell,
    summarise,
    write_ablation_report,
)

REPO = Path(__file__).resolve().parents[2]


def _params(**ablate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["ablate"].update(ablate)
    return parse_params(raw)


def test_default_cells_cover_every_fusion_and_loss_one_factor_at_a_time() -> None:
    cells = cells_of(_params())
    assert {c.fusion for c in cells} == {"concat", "local", "global", "lgfm", "pyramid", "mpam"}
    assert {c.loss for c in cells} == {"ce", "soft", "reweight"}
    assert {c.modality for c in cells} == {"both", "video", "audio"}
    full = cells_of(_params(full_matrix=True))
    assert len(full) == len(set(full)) == 3 * 6 * 3


def test_loss_cells_switch_the_objective_and_epce_still_reads() -> None:
    params = _params()
    ce = params_for_cell(params, AblationCell(loss="ce"))
    assert (ce.loss.form, ce.loss.w_pol, ce.loss.w_opp) == ("soft", 0.0, 0.0)
    soft = params_for_cell(params, AblationCell(loss="epce"))  # the old name of soft
    assert soft.loss == params.loss.model_copy(update={"form": "soft"})
    reweight = params_for_cell(params, AblationCell(fusion="pyramid", loss="reweight"), 2)
    assert reweight.loss.form == "reweight" and reweight.model.fusion == "pyramid"
    assert reweight.seed == params.ablate.seed + 2
    assert AblationCell.model_validate({"loss": "epce"}).loss == "soft"


def test_summary_is_mean_and_sample_std(tmp_path: Path) -> None:
    runs = [
        {
            "accuracy": 0.5,
            "uar": 0.45,
            "weighted_f1": 0.4,
            "macro_f1": 0.3,
            "polarity_accuracy": 0.7,
        },
        {
            "accuracy": 0.7,
            "uar": 0.65,
            "weighted_f1": 0.6,
            "macro_f1": 0.5,
            "polarity_accuracy": 0.9,
        },
    ]
    row = summarise(AblationCell(), runs)
    assert row["accuracy"] == pytest.approx(0.6)
    assert row["accuracy_std"] == pytest.approx(0.1414213, rel=1e-5)  # sqrt(0.02)
    assert row["seeds"] == 2
    assert summarise(AblationCell(), runs[:1])["accuracy_std"] == 0.0
    report = tmp_path / "ablation.md"
    write_ablation_report([row], report, run="ablation", variant="full")
    text = report.read_text(encoding="utf-8")
    assert "mean ± sample std over 2 seeds" in text
    assert "| both | lgfm | soft | 0.600 ± 0.141 | 0.550 ± 0.141 |" in text


@pytest.mark.slow
def test_two_seeds_train_twice_and_report_mean_and_std(
    corpus: SmallCorpus, tmp_path: Path, monkeypatch
) -> None:
    work = corpus.workdir(tmp_path / "work", epochs=1)
    raw = corpus.raw_with(epochs=1)
    raw["ablate"].update(
        cells=[{"fusion": "pyramid", "loss": "reweight"}], seeds=2, seed=42, epochs=1
    )
    raw["ablate"]["train"] = {"batch_size": 8}
    params = parse_params(raw)
    monkeypatch.chdir(work)
    rows = ablate(params, root=work, progress=False)
    assert len(rows) == 1 and rows[0]["seeds"] == 2
    cell = work / "artifacts" / "ablation" / "emotions" / "full" / "both-pyramid-reweight"
    seeds = [json.loads((cell / f"seed{s}" / "metrics.json").read_text()) for s in (42, 43)]
    mean = (seeds[0]["accuracy"] + seeds[1]["accuracy"]) / 2
    assert rows[0]["accuracy"] == pytest.approx(mean)
    written = json.loads((work / "metrics" / "emotions" / "ablation.json").read_text())
    assert written == rows
    # DVC's view of the same rows: keyed by cell, the switches in the key, not in the values.
    cells = json.loads((work / "metrics" / "emotions" / "ablation_cells.json").read_text())
    assert list(cells) == ["both/pyramid/reweight"]
    assert cells["both/pyramid/reweight"]["accuracy"] == rows[0]["accuracy"]
    assert cells["both/pyramid/reweight"]["accuracy_std"] == rows[0]["accuracy_std"]
    assert "fusion" not in cells["both/pyramid/reweight"]
    assert "over 2 seeds" in (work / "reports" / "ablation.md").read_text(encoding="utf-8")


def _raw(**train):
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["train"].update(train)
    return raw


def test_the_ablation_trains_its_own_recipe_and_shares_only_how_train_runs() -> None:
    params = parse_params(_raw(lr=0.123, epochs=2, weight_decay=0.3, device="cpu", threads=3))
    raw = _raw()
    raw["ablate"]["train"] = {"lr": 0.002}
    theirs = params_for_cell(params, AblationCell())
    assert theirs.train.epochs == params.ablate.epochs != params.train.epochs
    assert theirs.train.lr == TrainConfig().lr and theirs.train.weight_decay == 0.05
    assert (theirs.train.device, theirs.train.threads) == ("cpu", 3)  # execution: shared
    assert theirs.seed == params.ablate.seed
    own = params_for_cell(parse_params(raw), AblationCell())
    assert own.train.lr == 0.002


def test_ablate_train_refuses_an_unknown_key_and_the_shared_ones() -> None:
    for bad, named in (({"lrr": 1.0}, "lrr"), ({"device": "cpu"}, "device")):
        raw = _raw()
        raw["ablate"]["train"] = bad
        with pytest.raises(ConfigError, match=named) as error:
            parse_params(raw)
        assert "ablate.train" in str(error.value)


def test_dvc_yaml_ablate_depends_on_no_train_field_it_does_not_use() -> None:
    """`dvc exp run -S train.lr=...` must not rerun the ablation: of `train`, the stage's params
    are the execution fields the ablation shares, exactly."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["ablate"]
    train = [p for p in stage["params"] if str(p).split(".")[0] in ("train", "seed")]
    assert train == [f"train.{name}" for name in TRAIN_EXECUTION_FIELDS]
    assert {"ablate", "model", "loss", "evaluate"} <= set(stage["params"])
    assert set(TRAIN_EXECUTION_FIELDS) < set(TrainConfig.model_fields)
