"""A deterministic synthetic interaction stream with planted structure (the default dataset).

Why planted structure: tests and demos must show real effects (a recommender that beats chance,
alignment that measurably helps) in seconds, without downloading data. Users and items belong to
latent clusters; a user mostly interacts with (popular) items of its own cluster; an item's
"genre" attribute reveals its cluster most of the time, so the inductive item encoder has signal
for new items. Users and items arrive over time, so later versions see new users and new items,
which is what the version protocol is about.
"""

from __future__ import annotations

import numpy as np

from training.data.dataset import AttributeGroup, InteractionDataset, build_dataset

_EPOCH = 1_600_000_000
_SPAN_SECONDS = 365 * 86_400


def generate_synthetic(
    *,
    num_users: int = 600,
    num_items: int = 400,
    num_clusters: int = 8,
    min_interactions: int = 8,
    max_interactions: int = 30,
    affinity: float = 0.85,
    genre_noise: float = 0.1,
    num_tags: int = 24,
    string_ids: bool = False,
    seed: int = 0,
) -> InteractionDataset:
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(num_clusters, size=num_items)
    # Half the catalogue exists from the start, the rest is released over the first 90% of time.
    item_release = np.where(rng.random(num_items) < 0.5, 0.0, rng.uniform(0.0, 0.9, num_items))
    item_popularity = rng.pareto(1.5, num_items) + 1.0
    user_cluster = rng.integers(num_clusters, size=num_users)
    user_arrival = np.where(rng.random(num_users) < 0.4, 0.0, rng.uniform(0.0, 0.95, num_users))

    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    times: list[float] = []
    for u in range(num_users):
        count = int(rng.integers(min_interactions, max_interactions + 1))
        seen: set[int] = set()
        for t in np.sort(rng.uniform(user_arrival[u], 1.0, count)):
            released = item_release <= t
            own = released & (item_cluster == user_cluster[u])
            pool = own if (rng.random() < affinity and own.any()) else released
            candidates = np.flatnonzero(pool)
            fresh = candidates[~np.isin(candidates, list(seen))] if seen else candidates
            candidates = fresh if len(fresh) else candidates
            weights = item_popularity[candidates]
            i = int(rng.choice(candidates, p=weights / weights.sum()))
            seen.add(i)
            in_cluster = item_cluster[i] == user_cluster[u]
            users.append(u)
            items.append(i)
            ratings.append(float(rng.integers(4, 6) if in_cluster else rng.integers(1, 4)))
            times.append(t)

    user_raw = np.arange(num_users, dtype=np.int64) * 7 + 1000
    item_raw = np.arange(num_items, dtype=np.int64) * 3 + 50_000
    if string_ids:
        user_raw = np.array([f"user-{u:05d}" for u in range(num_users)])
        item_raw = np.array([f"item-{i:05d}" for i in range(num_items)])
    dataset = build_dataset(
        f"synthetic-s{seed}",
        users=user_raw[np.asarray(users)],
        items=item_raw[np.asarray(items)],
        ratings=np.asarray(ratings),
        timestamps=(_EPOCH + np.asarray(times) * _SPAN_SECONDS).astype(np.int64),
        source=f"generate_synthetic(seed={seed})",
    )

    # Attributes of the items that occur, in the dataset's item order.
    index_of = {raw: i for i, raw in enumerate(item_raw.tolist())}
    present = [index_of[raw] for raw in dataset.item_ids.tolist()]
    genres, tags = [], []
    for i in present:
        genre = item_cluster[i] if rng.random() >= genre_noise else rng.integers(num_clusters)
        genres.append([f"genre-{genre}"])
        tags.append([f"tag-{t}" for t in rng.choice(num_tags, size=int(rng.integers(1, 4)), replace=False)])
    return dataset.with_item_attributes(
        {
            "genre": AttributeGroup.from_tokens(
                "genre", genres, vocabulary=[f"genre-{c}" for c in range(num_clusters)]
            ),
            "tag": AttributeGroup.from_tokens("tag", tags, vocabulary=[f"tag-{t}" for t in range(num_tags)]),
        }
    )
