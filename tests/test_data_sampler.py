"""The batch order: same seed same order, exact resume, dataset mixing and per-process slices."""
from __future__ import annotations

from collections import Counter

from tuner.engine.data import prepare_data
from tuner.engine.data.sampler import DatasetBuckets, plan_epoch

from data_fixtures import CountingFamily, make_bundle, make_image


def dataset(tmp_path, folder, n, size=(64, 64), seed=0):
    for i in range(n):
        make_image(tmp_path / folder / f"{folder}_{chr(97 + i)}.png", *size, seed=seed + i)


def draw(data, n):
    return [data.next_batch().paths for _ in range(n)]


def test_same_seed_same_order_other_seed_other_order(tmp_path):
    dataset(tmp_path, "a", 8)
    ds = [{"id": "a", "instance_data_dir": "a"}]
    one = draw(prepare_data(make_bundle(tmp_path, ds, seed=3), CountingFamily()), 16)
    two = draw(prepare_data(make_bundle(tmp_path, ds, seed=3), CountingFamily()), 16)
    other = draw(prepare_data(make_bundle(tmp_path, ds, seed=4), CountingFamily()), 16)
    assert one == two and one != other
    assert one[:8] != one[8:] and sorted(one[:8]) == sorted(one[8:])   # each epoch reshuffles


def test_state_dict_resumes_exactly(tmp_path):
    dataset(tmp_path, "a", 6)
    (tmp_path / "a" / "a_a.txt").write_text("one\ntwo\nthree")      # several captions: chosen per draw
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a", "repeats": 1}],
                         train_batch_size=2)
    first = prepare_data(bundle, CountingFamily())
    draw(first, 5)
    state = first.state_dict()
    expected = [(b.paths, b.captions, b.latents) for b in (first.next_batch() for _ in range(5))]
    second = prepare_data(bundle, CountingFamily())
    assert second.encoded_latents == 0
    second.load_state_dict(state)
    got = [(b.paths, b.captions, b.latents) for b in (second.next_batch() for _ in range(5))]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert all((g[2] == e[2]).all() for g, e in zip(got, expected))
    assert second.epoch == first.epoch == 2


def test_two_datasets_both_appear_in_proportion_and_batches_never_mix(tmp_path):
    dataset(tmp_path, "small", 4, size=(64, 64))
    dataset(tmp_path, "large", 4, size=(128, 128), seed=10)
    bundle = make_bundle(tmp_path, [
        {"id": "small", "instance_data_dir": "small", "resolution": 32, "probability": 1},
        {"id": "large", "instance_data_dir": "large", "resolution": 64, "probability": 3, "repeats": 1,
         "is_regularisation_data": True},
    ], train_batch_size=2)
    data = prepare_data(bundle, CountingFamily())
    assert data.batches_per_epoch == 2 + 4
    seen = Counter()
    for _ in range(data.batches_per_epoch):
        batch = data.next_batch()
        assert len(set(batch.dataset_ids)) == 1
        side = {"small": 4, "large": 8}[batch.dataset_ids[0]]
        assert batch.latents.shape == (2, 4, side, side)
        assert batch.is_regularisation.tolist() == [batch.dataset_ids[0] == "large"] * 2
        seen[batch.dataset_ids[0]] += 1
    assert seen == {"small": 2, "large": 4}


def test_probability_orders_the_interleaving():
    many = [DatasetBuckets("a", (tuple(range(100)),)), DatasetBuckets("b", (tuple(range(100, 200)),), probability=9)]
    plan = plan_epoch(many, 1, seed=0, epoch=1)
    first_half = Counter(plan.dataset_of_batch[:100])
    assert first_half["b"] > 3 * first_half["a"]         # b is drawn first most of the time...
    assert Counter(plan.dataset_of_batch) == {"a": 100, "b": 100}   # ...but an epoch exhausts both


def test_two_processes_take_disjoint_halves_of_the_same_bucket(tmp_path):
    dataset(tmp_path, "a", 4, size=(64, 64))
    dataset(tmp_path, "b", 4, size=(96, 64), seed=20)
    ds = [{"id": "a", "instance_data_dir": "a"}, {"id": "b", "instance_data_dir": "b"}]
    bundle = make_bundle(tmp_path, ds, train_batch_size=2)
    waits = []
    main = prepare_data(bundle, CountingFamily(), num_processes=2, process_index=0,
                        wait_for_main=lambda: waits.append("main"))
    fam = CountingFamily()
    other = prepare_data(bundle, fam, num_processes=2, process_index=1, is_main=False,
                         wait_for_main=lambda: waits.append("other"))
    assert waits == ["main", "main", "other", "other"] and fam.pixels_encoded == 0 and fam.prompts_encoded == []
    assert main.batches_per_epoch == other.batches_per_epoch == 2
    for _ in range(4):
        a, b = main.next_batch(), other.next_batch()
        assert not set(a.paths) & set(b.paths)
        assert a.latents.shape == b.latents.shape and a.dataset_ids == b.dataset_ids
