"""Data source descriptions (pydantic, stored in the training state as JSON) and ``load_dataset``.

A version chain must see the same interaction timeline at every version, so the work directory
records *how* the data was loaded (this config) plus a fingerprint of what was loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.data.dataset import InteractionDataset
from training.data.ml100k_location import default_movielens_dir


class _DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticData(_DataConfig):
    kind: Literal["synthetic"] = "synthetic"
    num_users: int = Field(600, ge=2)
    num_items: int = Field(400, ge=2)
    num_clusters: int = Field(8, ge=1)
    min_interactions: int = Field(8, ge=1)
    max_interactions: int = Field(30, ge=1)
    affinity: float = Field(0.85, ge=0.0, le=1.0)
    string_ids: bool = False
    seed: int = 0


class MovieLensData(_DataConfig):
    kind: Literal["movielens-100k"] = "movielens-100k"
    path: Path = Field(default_factory=default_movielens_dir)


class AmazonData(_DataConfig):
    kind: Literal["amazon-2018"] = "amazon-2018"
    reviews: Path
    meta: Path
    name: str | None = None


class TableData(_DataConfig):
    kind: Literal["table"] = "table"
    path: Path
    user: str
    item: str
    timestamp: str
    rating: str | None = None
    attributes: tuple[str, ...] = ()
    attribute_separator: str = "|"
    file_format: Literal["parquet", "csv"] | None = None
    name: str | None = None
    #: A second file with the items' attribute columns, joined by item id (see ``training.data.table_attributes``).
    item_attributes_path: Path | None = None
    #: Its item id column when not named like ``item``.
    item_attributes_item: str | None = None
    item_attributes_format: Literal["parquet", "csv"] | None = None
    #: Interaction items without a row in the attribute file: refused, or given no attribute tokens.
    missing_item_attributes: Literal["error", "empty"] = "error"

    @model_validator(mode="after")
    def _item_attribute_file_options(self) -> TableData:
        if self.item_attributes_path is None:
            if self.item_attributes_item is not None or self.item_attributes_format is not None:
                raise ValueError("item_attributes_item and item_attributes_format need item_attributes_path")
        elif not self.attributes:
            raise ValueError("item_attributes_path needs attributes: the columns to take from the item attribute file")
        return self


DataConfig = Annotated[SyntheticData | MovieLensData | AmazonData | TableData, Field(discriminator="kind")]


def absolute(config: DataConfig) -> DataConfig:
    """The same config with file paths made absolute (the state must not depend on the cwd)."""
    updates = {name: Path(value).absolute() for name, value in config.model_dump().items() if isinstance(value, Path)}
    return config.model_copy(update=updates)


def load_dataset(config: DataConfig) -> InteractionDataset:
    if isinstance(config, SyntheticData):
        from training.data.synthetic import generate_synthetic

        return generate_synthetic(**config.model_dump(exclude={"kind"}))
    if isinstance(config, MovieLensData):
        from training.data.movielens import load_movielens_100k

        return load_movielens_100k(config.path)
    if isinstance(config, AmazonData):
        from training.data.amazon import load_amazon_2018

        return load_amazon_2018(config.reviews, config.meta, name=config.name)
    if isinstance(config, TableData):
        from training.data.table import load_table

        return load_table(
            config.path,
            user=config.user,
            item=config.item,
            timestamp=config.timestamp,
            rating=config.rating,
            attributes=config.attributes,
            attribute_separator=config.attribute_separator,
            file_format=config.file_format,
            name=config.name,
            item_attributes_path=config.item_attributes_path,
            item_attributes_item=config.item_attributes_item,
            item_attributes_format=config.item_attributes_format,
            missing_item_attributes=config.missing_item_attributes,
        )
    raise TypeError(f"unknown data config {config!r}")  # pragma: no cover - the union is closed
