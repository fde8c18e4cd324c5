"""`python -m benchmarks.mind_clicks --behaviors B --news N --out DIR`: MIND's impression logs
(Wu et al., ACL 2020, "MIND: A Large-scale Dataset for News Recommendation") as one labelled row
per shown news item, one Parquet file per day, for `reloop replay` on a real click log with real
timestamps (`pipelines/mind.toml`; docs/RESULTS.md section 6).

MIND's `behaviors.tsv` holds, per impression, the user, the time ("11/11/2019 9:05:58 AM", read
as UTC), the user's click history and the shown items with their labels ("N55689-1 N35729-0");
`news.tsv` gives each item's category and subcategory. Each shown item becomes a row: the
impression id and its rank in the list, the time, user, item, category, subcategory, hour,
the label. MIND's licence (Microsoft Research License Terms) allows research use and forbids
redistribution: write `--out` outside the repository, as this script is the only MIND-specific
thing the project ships. It reads MINDsmall's full files as well as a sample of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
BEHAVIORS = ["impression", "user_id", "time", "history", "impressions"]
NEWS = ["item_id", "category", "subcategory", "title", "abstract", "url", "t_ent", "a_ent"]


def read_tsv(path: Path, columns: list[str]) -> pl.DataFrame:
    return pl.read_csv(
        path,
        separator="\t",
        has_header=False,
        new_columns=columns,
        quote_char=None,
        schema_overrides={name: pl.String for name in columns},
    )


def click_rows(behaviors: Path, news: Path) -> pl.DataFrame:
    """One row per shown item, in time order."""
    shown = (
        read_tsv(behaviors, BEHAVIORS)
        .with_columns(
            pl.col("time").str.strptime(pl.Datetime("us", "UTC"), TIME_FORMAT).alias("at"),
            pl.col("impressions").str.split(" ").alias("shown"),
        )
        .with_columns(pl.int_ranges(pl.col("shown").list.len()).alias("rank"))
        .explode("shown", "rank")
        .with_columns(
            pl.col("shown").str.split("-").list.get(0).alias("item_id"),
            pl.col("shown").str.split("-").list.get(1).cast(pl.Int8).alias("click"),
        )
    )
    categories = read_tsv(news, NEWS).select("item_id", "category", "subcategory").unique("item_id")
    return (
        shown.join(categories, on="item_id", how="left")
        .select(
            (pl.col("impression") + "-" + pl.col("rank").cast(pl.String)).alias("impression_id"),
            (pl.col("at").dt.epoch("s")).alias("ts"),
            "user_id",
            "item_id",
            pl.col("category").fill_null(""),
            pl.col("subcategory").fill_null(""),
            pl.col("at").dt.hour().alias("hour"),
            "click",
        )
        .sort("ts", "impression_id")
    )


def write_days(rows: pl.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    days = rows.with_columns(pl.from_epoch("ts", "s").dt.date().alias("_day"))
    for (day,), part in days.group_by("_day", maintain_order=True):
        path = out / f"mind-{day}.parquet"
        part.drop("_day").write_parquet(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviors", type=Path, required=True, help="MIND's behaviors.tsv")
    parser.add_argument("--news", type=Path, required=True, help="MIND's news.tsv")
    parser.add_argument("--out", type=Path, required=True, help="folder for the day files")
    args = parser.parse_args(argv)
    rows = click_rows(args.behaviors, args.news)
    paths = write_days(rows, args.out)
    known = rows.filter(pl.col("category") != "").height
    print(
        f"{rows.height:,} rows ({int(rows['click'].sum()):,} clicks) from "
        f"{rows['impression_id'].str.split('-').list.get(0).n_unique():,} impressions, "
        f"{len(paths)} days, category known for {known / rows.height:.0%}: "
        + ", ".join(p.name for p in paths)
    )
    return paths


if __name__ == "__main__":
    main()
