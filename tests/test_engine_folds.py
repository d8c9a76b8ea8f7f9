"""Few-shot folds: one run per fold, reported as mean ± std."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_factories import write_modelnet_h5

from pointpeft_cli.engine.folds import parse_folds
from pointpeft_cli.errors import UsageError
from tests.cli_helpers import run_cli


def test_parse_folds() -> None:
    assert parse_folds("0-3") == [0, 1, 2, 3]
    assert parse_folds("5,1,1") == [1, 5]
    for bad in ("x", "3-12", "", "-1"):
        with pytest.raises(UsageError):
            parse_folds(bad)


def test_fewshot_folds_report_mean_and_std(tmp_path: Path) -> None:
    labels = {"train": [c for c in range(6) for _ in range(12)], "test": list(range(6)) * 20}
    write_modelnet_h5(tmp_path / "mn", labels, n=1100)
    out = tmp_path / "folds"
    res = run_cli(
        "finetune", "--task", "modelnet40-fewshot", "--data-dir", str(tmp_path / "mn"),
        "--backbone", "point-mae-mini", "--set", "model.pretrained=false", "--epochs", "1",
        "--batch-size", "16", "--max-test-samples", "20", "--folds", "0,1", "--out", str(out),
        "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    obj = res.json()
    accs = [f["best"]["accuracy"] for f in obj["folds"]]
    assert [f["fold"] for f in obj["folds"]] == [0, 1]
    assert obj["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert obj["accuracy_std"] == pytest.approx(np.std(accs))
    assert json.loads((out / "folds.json").read_text())["accuracy_mean"] == obj["accuracy_mean"]
    names = [json.loads((out / f"fold-{k}" / "run.json").read_text())["dataset"]["class_names"]
             for k in (0, 1)]  # fmt: skip
    assert names[0] != names[1]  # each fold is its own episode
    wrong = run_cli("finetune", "--task", "shapes", "--folds", "0-1", "--json")
    assert wrong.exit_code == 2
