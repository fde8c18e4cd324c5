"""`python -m benchmarks.oracle_gap`: how close to the oracle can any daily-retrained model get?

On the simulated feed the oracle ranks day d by the true CTR, which uses day d's user tastes and
knows every new item. A model trained on days before d cannot know either. The *stale oracle*
is the best such a model could do with unlimited data: the true formula with the tastes of day
d-1 and, for items born on day d, their category's mean vector and zero quality. Its distance
from the oracle is the part of the oracle gap that drift and new items make; the rest of a
model's gap is estimation error, which only more rows per user and item close.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import polars as pl
import torch

from reloop_cli.evaluation.metrics import auc
from reloop_cli.experiments.synth import DEVICES, SynthConfig, World


class Reference(torch.nn.Module):
    """The simulator's logit shape with free parameters: logistic matrix factorisation."""

    def __init__(self, users: int, items: int, dim: int) -> None:
        super().__init__()
        self.user, self.item = torch.nn.Embedding(users, dim), torch.nn.Embedding(items, dim)
        self.biases = torch.nn.ModuleList(
            torch.nn.Embedding(n, 1) for n in (users, items, 24, len(DEVICES), 11)
        )
        for table in (self.user, self.item):
            torch.nn.init.normal_(table.weight, std=0.1)
        for table in self.biases:
            torch.nn.init.zeros_(table.weight)
        self.base = torch.nn.Parameter(torch.tensor(-2.5))

    def forward(self, columns: torch.Tensor) -> torch.Tensor:
        user, item = columns[:, 0], columns[:, 1]
        dot = (self.user(user) * self.item(item)).sum(1)
        return self.base + dot + sum(b(columns[:, i])[:, 0] for i, b in enumerate(self.biases))


def _columns(frame: pl.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """A day's impressions as integer columns (user, item, hour, device, position) and clicks."""
    device = frame["device"].replace_strict({name: i for i, name in enumerate(DEVICES)})
    columns = np.stack(
        [
            frame["user_id"].cast(int).to_numpy(),
            frame["item_id"].cast(int).to_numpy(),
            frame["hour"].to_numpy(),
            device.to_numpy(),
            frame["position"].to_numpy(),
        ],
        axis=1,
    ).astype(np.int64)
    return torch.from_numpy(columns), torch.from_numpy(frame["click"].to_numpy().astype("f4"))


def reference_auc(
    past: list[tuple[torch.Tensor, torch.Tensor]],
    today: tuple[torch.Tensor, torch.Tensor],
    config: SynthConfig,
    l2: float,
) -> float:
    """Fit `Reference` on the earlier days (10 epochs, Adam 0.02, batch 4096), AUC on today;
    days come as `_columns` gives them."""
    columns, label = (torch.cat(part) for part in zip(*past, strict=True))
    torch.manual_seed(config.seed)
    model = Reference(config.users, int(columns[:, 1].max()) + 1000, config.latent_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(10):
        for batch in torch.randperm(len(label)).split(4096):
            x = columns[batch]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), label[batch])
            users, items = x[:, 0], x[:, 1]  # L2 on the rows this batch uses, as FuxiCTR does
            penalty = sum(
                t.pow(2).sum(1).mean()
                for t in (
                    model.user(users),
                    model.item(items),
                    model.biases[0](users),
                    model.biases[1](items),
                )
            )
            optimizer.zero_grad()
            (loss + l2 * penalty).backward()
            optimizer.step()
    test_columns, test_label = today[0].clone(), today[1]
    test_columns[:, 1].clamp_(max=model.item.num_embeddings - 1)
    with torch.no_grad():
        return auc(test_label.numpy(), model(test_columns).numpy())


def stale_oracle_gap(config: SynthConfig, reference_l2: float | None = None) -> list[dict]:
    """Per day d >= 1: oracle AUC, stale-oracle AUC, the share of impressions on new items and,
    with `reference_l2`, the reference model's AUC."""
    world = World(config)
    yesterday_tastes, known_items, days, encoded = None, 0, [], []
    for index in range(config.days):
        tastes = world.user_vectors.copy()  # what day `index` is drawn with (it drifts after)
        frame = world.day(index)
        encoded.append(_columns(frame))
        if yesterday_tastes is not None:
            user, item, hour, device, position = encoded[-1][0].numpy().T
            vectors, quality = world.item_vectors[item].copy(), world.item_quality[item].copy()
            new = item >= known_items
            vectors[new] = world.category_vectors[world.item_category[item[new]]] * 1.5
            quality[new] = 0.0
            affinity = np.einsum("ij,ij->i", yesterday_tastes[user], vectors)
            stale = world.logit(affinity, quality, user, hour, device, position)
            click = frame["click"].to_numpy()
            days.append(
                {
                    "oracle_auc": auc(click, frame["true_ctr"].to_numpy()),
                    "stale_oracle_auc": auc(click, stale),
                    "new_item_share": float(new.mean()),
                }
            )
            if reference_l2 is not None:
                days[-1]["reference_auc"] = reference_auc(
                    encoded[:-1], encoded[-1], config, reference_l2
                )
        yesterday_tastes = tastes
        known_items = len(world.item_vectors) - config.new_items_per_day  # items of day `index`
    return days


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="synth seeds (worlds) to measure")
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--reference", action="store_true", help="also fit the reference model")
    parser.add_argument("--reference-l2", type=float, default=0.003)
    args = parser.parse_args(argv)
    l2 = args.reference_l2 if args.reference else None
    figures = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        config = SynthConfig(days=args.days, rows_per_day=args.rows, seed=seed)
        days = stale_oracle_gap(config, l2)
        mean = {key: float(np.mean([d[key] for d in days])) for key in days[0]}
        mean["drift_gap"] = mean["oracle_auc"] - mean["stale_oracle_auc"]
        figures[f"seed_{seed}"] = mean
        print(
            f"world {seed}: oracle {mean['oracle_auc']:.4f}, stale oracle "
            f"{mean['stale_oracle_auc']:.4f}, gap from drift and new items "
            f"{mean['drift_gap']:.4f}, impressions on new items {mean['new_item_share']:.1%}"
            + (f", reference model {mean['reference_auc']:.4f}" if l2 is not None else "")
        )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
