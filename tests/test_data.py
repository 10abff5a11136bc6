"""lspc/data/dataset.py: dsrl's density grid filter with the task's bins from dsrl.infos.DENSITY_CFG."""
import numpy as np
import pytest

import train_lspc_iql
from conftest import tiny_args
from lspc import LSPCError
from lspc.data.collect import episode_returns, write_dsrl_hdf5
from lspc.data.dataset import density_bins, load_dataset
from lspc.envs import dsrl_infos, make_env

TASK = "OfflineCarCircle-v0"  # DENSITY_CFG: 0.5 keeps at most 5 per bin, 0.75 at most 9; both drop bins of <= 2
# (cost return, reward return, trajectories). Cost returns span 0..100 and reward returns 0..500 (the two
# corner trajectories), so with 10 x 50 bins each cluster below sits inside one 10 x 10 cell.
CLUSTERS = [(0, 0, 1), (100, 500, 1), (15, 105, 20), (35, 205, 7), (55, 305, 3), (75, 405, 2), (85, 255, 1)]


@pytest.fixture(scope="module")
def clustered_file(tmp_path_factory):
    """Two-step trajectories whose returns fall in known bins; obs/action shapes of CarCircle."""
    returns = [(cost, reward) for cost, reward, count in CLUSTERS for _ in range(count)]
    n = 2 * len(returns)
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.standard_normal((n, 8)).astype(np.float32),
        "next_observations": rng.standard_normal((n, 8)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.repeat([reward / 2 for _, reward in returns], 2).astype(np.float32),
        "costs": np.repeat([cost / 2 for cost, _ in returns], 2).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": np.tile([False, True], len(returns)),
    }
    path = tmp_path_factory.mktemp("density") / "clusters.hdf5"
    write_dsrl_hdf5(str(path), data, {"task": TASK})
    return str(path)


def kept_per_cluster(data):
    returns = episode_returns(data)
    pairs = list(zip(returns["cost"].round(3), returns["reward"].round(3)))
    return {(cost, reward): pairs.count((cost, reward)) for cost, reward, _ in CLUSTERS}


def test_density_thins_with_the_tasks_bins(clustered_file):
    env = make_env(TASK)
    kept = {}
    for density in (0.5, 0.75):
        bins = dsrl_infos().DENSITY_CFG[f"{TASK}_density{density}"]
        assert (bins["cbins"], bins["rbins"], bins["min_npb"]) == (10, 50, 2)
        kept[density] = kept_per_cluster(load_dataset(env, clustered_file, density=density, seed=0))
        for cost, reward, count in CLUSTERS:  # a cell keeps at most max_npb, and none if it has <= min_npb
            expected = min(count, bins["max_npb"]) if count > bins["min_npb"] else 0
            assert kept[density][(cost, reward)] == expected, (density, cost, reward)
    assert kept[0.5][(15, 105)] == 5 and kept[0.75][(15, 105)] == 9  # the two densities thin differently
    assert sum(kept[0.5].values()) == 13 and sum(kept[0.75].values()) == 19
    assert sum(kept_per_cluster(load_dataset(env, clustered_file)).values()) == 35  # density 1: no filter
    env.close()


def test_density_bins_are_dsrl_infos():
    assert density_bins("OfflineCarRun-v0", 0.75) == {"cbins": 10, "rbins": 20, "max_npb": 11, "min_npb": 2}
    assert density_bins("OfflineAntRun-v0", 1.0) == {}  # no filter: valid for every task


@pytest.mark.parametrize("task, density, listed", [
    ("OfflineCarRun-v0", 0.3, "it lists 0.5, 0.75 for OfflineCarRun-v0"),
    ("OfflineCarGoal1Gymnasium-v0", 0.75, "it lists 0.25, 0.5 for OfflineCarGoal1Gymnasium-v0"),
    ("OfflineHopperVelocityGymnasium-v1", 0.5, "it lists none for OfflineHopperVelocityGymnasium-v1"),
])
def test_unlisted_density_is_refused(task, density, listed):
    with pytest.raises(LSPCError) as err:
        density_bins(task, density)
    assert str(err.value) == (f"density {density:g} has no grid-filter bins in dsrl's DENSITY_CFG: {listed} "
                              "(density 1.0, no filter, works for every task)")


def test_training_refuses_an_unlisted_density_before_writing(ballrun_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_lspc_iql.main(tiny_args(ballrun_file, tmp_path, density=0.6))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == ("error: density 0.6 has no grid-filter bins in dsrl's DENSITY_CFG: it lists 0.5, 0.75 "
                   "for OfflineBallRun-v0 (density 1.0, no filter, works for every task)\n")
    assert list(tmp_path.iterdir()) == []  # nothing written
