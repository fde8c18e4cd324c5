"""The [model], [train], [vocabulary] and [gate] sections of a pipeline spec."""

from __future__ import annotations

from dataclasses import dataclass, field

from reloop_cli.spec.checks import check

LOSSES = ("bce", "kd", "reloop")
LAST_SOURCES = ("parent", "served")
MONITORS = ("auc", "logloss", "auc-logloss")
DEVICES = ("auto", "cpu", "cuda")
EMBEDDING_UPDATES = ("auto", "sparse", "dense")
GATE_METRICS = ("auc", "snips_ctr")
L2_ROWS = ("batch-aware", "touched", "all")
MAX_LEARNING_RATE = 1e30  # beyond, float32 optimiser state overflows before the loss does
# The model zoo's names (`models/__init__.py` maps each to its class; a test keeps the two equal):
# the spec is below the models in the layer order, so it names them rather than importing them.
MODEL_NAMES = ("lr", "fm", "deepfm", "widedeep", "dcn", "dcnv2", "xdeepfm")


@dataclass(frozen=True)
class ModelSpec:
    """Which network and its size; see docs/MODELS.md for what each knob does."""

    name: str = "deepfm"
    embedding_dim: int = 10
    hidden_units: tuple[int, ...] = (64, 64)
    dropout: float = 0.0
    batch_norm: bool = False
    cross_layers: int = 2
    cin_layers: tuple[int, ...] = (16, 16)

    def validate(self) -> None:
        check(
            self.name in MODEL_NAMES,
            "model.name",
            f"'{self.name}' is not one of {sorted(MODEL_NAMES)}",
        )
        check(self.embedding_dim > 0, "model.embedding_dim", "must be positive")
        check(all(h > 0 for h in self.hidden_units), "model.hidden_units", "must be positive")
        check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        check(self.cross_layers >= 0, "model.cross_layers", "must be >= 0")


@dataclass(frozen=True)
class TrainSpec:
    """How each new version is trained."""

    loss: str = "reloop"
    alpha: float = 0.5
    window_days: int = 3
    epochs: int = 10  # at most; early stopping usually ends sooner
    batch_size: int = 1024
    learning_rate: float = 1e-3
    embedding_l2: float = 0.0
    validation_fraction: float = 0.1  # rows held out for early stopping; 0 = train all epochs
    monitor: str = "auc"  # auc | logloss | auc-logloss, measured on the validation slice
    patience: int = 2  # epochs without improvement before stopping
    plateau_factor: float = 0.1  # learning rate times this when an epoch does not improve
    min_learning_rate: float = 1e-6
    max_grad_norm: float = 0.0  # clip the gradient's global norm to this each step; 0 = off
    seed: int = 0
    warm_start: bool = False
    last_source: str = "parent"
    min_count: int = 1  # a value seen fewer times in a window stays out-of-vocabulary
    device: str = "auto"  # cpu | cuda | auto (cuda when one is visible); nothing needs a GPU
    # How the embedding tables learn: "sparse" updates only the rows a batch touches (RowAdam),
    # "dense" updates every row (Adam); "auto" takes sparse for tables above SPARSE_MIN_ROWS rows.
    embedding_updates: str = "auto"
    # Which rows embedding_l2 regularises (regulariser.py): "batch-aware" (the rows a batch looks
    # up, each weighted by 1 / P(row in a batch)), "touched" (those rows, unweighted) or "all"
    # (every row every step, FuxiCTR's form; dense updates only).
    embedding_l2_rows: str = "batch-aware"

    def validate(self) -> None:
        check(self.loss in LOSSES, "loss", f"'{self.loss}' is not one of {', '.join(LOSSES)}")
        check(0.0 <= self.alpha <= 1.0, "alpha", f"{self.alpha} is outside [0, 1]")
        check(self.window_days >= 1, "train.window_days", "must be >= 1")
        check(self.epochs >= 1, "train.epochs", "must be >= 1")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(
            0 < self.learning_rate <= MAX_LEARNING_RATE,
            "train.learning_rate",
            f"must be positive and at most {MAX_LEARNING_RATE:g}",
        )
        check(self.embedding_l2 >= 0, "train.embedding_l2", "must be >= 0")
        check(0 <= self.validation_fraction < 1, "train.validation_fraction", "not in [0, 1)")
        check(self.monitor in MONITORS, "train.monitor", f"one of {MONITORS}")
        check(self.patience >= 1, "train.patience", "must be >= 1")
        check(0 < self.plateau_factor <= 1, "train.plateau_factor", "must be in (0, 1]")
        check(self.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0 (0 = no clipping)")
        check(self.last_source in LAST_SOURCES, "train.last_source", f"one of {LAST_SOURCES}")
        check(self.min_count >= 1, "train.min_count", "must be >= 1")
        check(self.device in DEVICES, "train.device", f"one of {DEVICES}")
        check(
            self.embedding_updates in EMBEDDING_UPDATES,
            "train.embedding_updates",
            f"one of {EMBEDDING_UPDATES}",
        )
        check(self.embedding_l2_rows in L2_ROWS, "train.embedding_l2_rows", f"one of {L2_ROWS}")
        check(
            not (self.embedding_l2_rows == "all" and self.embedding_updates == "sparse"),
            "train.embedding_l2_rows",
            '"all" regularises every row every step, which sparse updates never touch; '
            'use "batch-aware" or embedding_updates = "dense"',
        )


@dataclass(frozen=True)
class FieldPolicy:
    """One field's vocabulary rules, resolved from the [vocabulary] section."""

    min_count: int
    max_rows: int  # 0: unbounded
    evict_after_days: int  # 0: never
    hash_buckets: int  # 0: a vocabulary; N: the field hashes into N rows, no vocabulary kept


@dataclass(frozen=True)
class VocabularySpec:
    """How each field's embedding rows live (docs/MODELS.md, "Vocabulary"). Each rule is one
    number for every field or a table naming fields: `max_rows = { user_id = 2000000 }`."""

    min_count: int | dict = 0  # admission: seen at least this often in the window; 0: train's
    max_rows: int | dict = 0  # capacity: keep the most frequent in the window; 0: unbounded
    evict_after_days: int | dict = 0  # drop values not seen for this many days; 0: never
    hash_buckets: dict = field(default_factory=dict)  # field -> rows it hashes into

    def policy(self, name: str, default_min_count: int) -> FieldPolicy:
        def pick(rule: int | dict) -> int:
            return int(rule.get(name, 0) if isinstance(rule, dict) else rule)

        return FieldPolicy(
            pick(self.min_count) or default_min_count,
            pick(self.max_rows),
            pick(self.evict_after_days),
            int(self.hash_buckets.get(name, 0)),
        )

    def validate(self, fields: tuple[str, ...] = ()) -> None:
        for key in ("min_count", "max_rows", "evict_after_days", "hash_buckets"):
            rule = getattr(self, key)
            where = f"vocabulary.{key}"
            if key == "hash_buckets" or isinstance(rule, dict):
                check(isinstance(rule, dict), where, "must be a table { field = number }")
                unknown = sorted(set(rule) - set(fields)) if fields else []
                check(not unknown, where, f"names no categorical field: {', '.join(unknown)}")
                values = list(rule.values())
            else:
                values = [rule]
            check(
                all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values),
                where,
                "must be whole numbers >= 0",
            )
        for name, buckets in self.hash_buckets.items():
            check(buckets >= 1, f"vocabulary.hash_buckets.{name}", "must be >= 1")
            kept = [
                key
                for key in ("min_count", "max_rows", "evict_after_days")
                if isinstance(getattr(self, key), dict) and name in getattr(self, key)
            ]
            check(
                not kept,
                f"vocabulary.hash_buckets.{name}",
                f"a hashed field keeps no vocabulary, so it takes no {', '.join(kept)}",
            )


@dataclass(frozen=True)
class GateSpec:
    """When a candidate may replace the live version."""

    # Non-inferiority: promote when, at `confidence`, the candidate's AUC is not below live's by
    # more than max_auc_drop (the interval's lower end of candidate - live is above -drop) and its
    # Logloss not above live's by more than max_logloss_rise; paired tests on the holdout rows.
    max_auc_drop: float = 0.002
    max_logloss_rise: float = 0.005
    # "auc": the rule above on the holdout rows; "snips_ctr": the candidate's online CTR
    # estimated off-policy from the live policy's logged slates (needs propensities and slates,
    # as `reloop simulate --closed-loop` writes them), not more than max_ctr_drop below live's.
    metric: str = "auc"
    max_ctr_drop: float = 0.002
    confidence: float = 0.95  # level of the two-sided intervals the rule reads
    min_clicks: int = 100  # fewer clicks in the holdout: inconclusive, live keeps serving
    min_auc: float = 0.55  # absolute floors: the only checks for the very first version
    max_logloss: float = 1.0
    holdout_fraction: float = 0.2  # share of the newest day kept out of training to judge on

    def validate(self) -> None:
        check(self.max_auc_drop >= 0, "gate.max_auc_drop", "must be >= 0")
        check(self.max_logloss_rise >= 0, "gate.max_logloss_rise", "must be >= 0")
        check(0 < self.confidence < 1, "gate.confidence", "must be in (0, 1)")
        check(self.min_clicks >= 0, "gate.min_clicks", "must be >= 0")
        check(self.metric in GATE_METRICS, "gate.metric", f"one of {GATE_METRICS}")
        check(self.max_ctr_drop >= 0, "gate.max_ctr_drop", "must be >= 0")
        check(0 < self.holdout_fraction < 1, "gate.holdout_fraction", "must be in (0, 1)")
