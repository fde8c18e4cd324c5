"""FuxiCTR's side of `python -m benchmarks.versus_fuxictr`; runs only inside FuxiCTR's own venv.

FuxiCTR 2.3.10's wheel has no model zoo, so DeepFM is assembled here from the library's own
layers (FeatureEmbedding, FactorizationMachine = LR + inner-product sum, MLP_Block) on its
BaseModel, which supplies FuxiCTR's training loop: Adam, the embedding regulariser, gradient
clipping at norm 10, early stopping on validation AUC and reduce-on-plateau. The CSV files are
preprocessed by FuxiCTR's FeatureProcessor + build_dataset, as a FuxiCTR user would.

Usage (by the parent benchmark): python fuxictr_deepfm.py DATA_DIR RESULT_JSON EPOCHS EMB_REG
DATA_DIR holds train.csv, valid.csv and test.csv; RESULT_JSON receives the measured figures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything


def feature_names(csv: Path) -> list[str]:
    """Every column of the parent's CSV but the label, in order (the parent chose them)."""
    with csv.open() as handle:
        header = handle.readline().strip().split(",")
    return [name for name in header if name != "label"]


class DeepFM(BaseModel):
    """DeepFM from FuxiCTR's layers: FM (first + second order) plus an MLP over the embeddings."""

    def __init__(
        self,
        feature_map,
        embedding_dim,
        hidden_units,
        dropout,
        batch_norm,
        lr,
        embedding_regularizer,
        **kwargs,
    ):
        super().__init__(
            feature_map, model_id="DeepFM", embedding_regularizer=embedding_regularizer, **kwargs
        )
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(
            input_dim=feature_map.num_fields * embedding_dim,
            output_dim=1,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            dropout_rates=dropout,
            batch_norm=batch_norm,
        )
        self.compile("Adam", "binary_crossentropy", lr)
        self.reset_parameters()
        self.model_to_device()
        self.epoch_seconds: list[float] = []
        self.eval_seconds = 0.0

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        logit = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(logit)}

    def train_epoch(self, data_generator):
        start, evaluated = time.perf_counter(), self.eval_seconds
        super().train_epoch(data_generator)
        self.epoch_seconds.append(time.perf_counter() - start - (self.eval_seconds - evaluated))

    def eval_step(self):
        start = time.perf_counter()
        super().eval_step()
        self.eval_seconds += time.perf_counter() - start


def main(data_dir: Path, result: Path, epochs: int, emb_reg: float) -> None:
    logging.basicConfig(level=logging.WARNING)
    work = data_dir / "fuxictr"
    start = time.perf_counter()
    processor = FeatureProcessor(
        feature_cols=[
            {
                "name": feature_names(data_dir / "train.csv"),
                "active": True,
                "dtype": "str",
                "type": "categorical",
            }
        ],
        label_col={"name": "label", "dtype": "float"},
        dataset_id="frappe_811",
        data_root=str(work),
    )
    train, valid, test = build_dataset(
        processor,
        train_data=str(data_dir / "train.csv"),
        valid_data=str(data_dir / "valid.csv"),
        test_data=str(data_dir / "test.csv"),
    )
    preprocess_s = time.perf_counter() - start
    feature_map = FeatureMap("frappe_811", str(work / "frappe_811"))
    feature_map.load(str(work / "frappe_811" / "feature_map.json"), {})
    seed_everything(0)
    torch.set_num_threads(torch.get_num_threads())
    train_gen, valid_gen, test_gen = RankDataLoader(
        feature_map,
        stage="both",
        train_data=train,
        valid_data=valid,
        test_data=test,
        batch_size=1024,
        shuffle=True,
        data_format="parquet",
    )
    model = DeepFM(
        feature_map,
        embedding_dim=10,
        hidden_units=[400, 400, 400],
        dropout=0.2,
        batch_norm=True,
        lr=1e-3,
        embedding_regularizer=emb_reg,
        gpu=-1,
        verbose=0,
        model_root=str(work / "checkpoints"),
        metrics=["AUC", "logloss"],
        monitor="AUC",
        early_stop_patience=2,
    )
    Path(model.model_dir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model.fit(train_gen, epochs=epochs, validation_data=valid_gen)
    fit_s = time.perf_counter() - start
    metrics = model.evaluate(test_gen)
    result.write_text(
        json.dumps(
            {
                "preprocess_seconds": preprocess_s,
                "fit_seconds": fit_s,
                "epoch_train_seconds": model.epoch_seconds,
                "train_rows": train_gen.num_samples,
                "test_auc": metrics["AUC"],
                "test_logloss": metrics["logloss"],
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
