"""Continuing a classifier (`train --init-from`): a retrained model starts where the current one is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stream.artifact import load_artifact
from stream.cli import main
from stream.model import ModelSize
from stream.windows import WindowConfig
from training import dataset, train


def _cfg(**kw) -> train.TrainConfig:
    return train.TrainConfig(**{"pretrain_steps": 20, "finetune_epochs": 1, "max_train_windows": 2000, "batch_size": 64,
                                "user_alert_rate": 0.02, "baselines": False, **kw})


@pytest.fixture(scope="module")
def continued(tiny_model, traffic, tmp_path_factory):
    # asks for the default size and window: a continued model must keep the current one's instead
    res = train.train(lambda: dataset.batches_from_records(traffic), tmp_path_factory.mktemp("continued"),
                      _cfg(init_from=tiny_model[0].artifact), show=False)
    return res, load_artifact(res.artifact), load_artifact(tiny_model[0].artifact)


def test_a_continued_classifier_keeps_the_current_models_vocabulary(continued):
    _, new, old = continued
    assert new.vocab == old.vocab


def test_a_continued_classifier_keeps_the_current_models_window_and_size(continued):
    _, new, old = continued
    assert new.meta.window == old.meta.window != json.loads(json.dumps(train.asdict(WindowConfig())))
    assert train.model_size(new.model.config) == train.model_size(old.model.config) != ModelSize()


def test_the_report_names_the_model_a_classifier_was_continued_from(continued):
    res, _, old = continued
    info = json.loads((res.report_dir / "report.json").read_text())["training"]
    assert info["continued_from"] == old.version


def test_fine_tuning_that_does_worse_on_validation_leaves_the_continued_classifier_as_it_was(tiny_model, traffic):
    art = load_artifact(tiny_model[0].artifact)
    ws = dataset.build_windows(dataset.batches_from_records(traffic), art.vocab, art.window_config)
    sp = dataset.split(ws)
    before = {k: v.clone() for k, v in art.model.state_dict().items()}
    # a learning rate that wrecks the weights: validation PR-AUC falls, so nothing of it is kept
    model, _ = train.finetune(art.model, ws.subset(sp.train), ws.subset(sp.val), art.vocab,
                              _cfg(lr=50.0, size=train.model_size(art.model.config)), "cpu", False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(before[k], v) for k, v in art.model.state_dict().items())  # the current model untouched


def test_fine_tuning_that_does_better_on_validation_is_kept(tiny_model, traffic):
    art = load_artifact(tiny_model[0].artifact)
    ws = dataset.build_windows(dataset.batches_from_records(traffic), art.vocab, art.window_config)
    sp = dataset.split(ws)
    # labels the current model ranks backwards, in training and validation: fitting them beats it
    flipped = ws.subset(np.arange(len(ws)))
    flipped.label[:] = np.where(ws.label == 1, 0, 1)
    model, _ = train.finetune(art.model, flipped.subset(sp.train), flipped.subset(sp.val), art.vocab,
                              _cfg(size=train.model_size(art.model.config), finetune_epochs=2), "cpu", False)
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in art.model.state_dict().items())


def test_a_zero_label_model_is_not_continued(tiny_model, traffic, tmp_path):
    with pytest.raises(ValueError, match="zero-label model trains from scratch"):
        train.train(lambda: dataset.batches_from_records(traffic), tmp_path,
                    _cfg(init_from=tiny_model[0].artifact, zero_label=True), show=False)


def test_train_init_from_a_version_the_registry_lacks_is_one_line(tiny_model, traffic_log, tmp_path, capsys):
    rc = main(["train", str(traffic_log), "--init-from", "no-such-version", "--registry", str(tiny_model[1]),
               "--no-registry", "--out", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc != 0 and "no model no-such-version" in err and len(err.strip().splitlines()) == 1
