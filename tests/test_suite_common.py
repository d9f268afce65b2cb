"""Contracts every benchmark suite keeps: registration, protocol fields, errors, cheap imports, helpers."""

import dataclasses
import importlib
import subprocess
import sys

import numpy as np
import pytest

from bench import config as config_lib
from bench import registry
from tasks import wrappers

SUITES = {
    "atari100k": ("tasks.atari", "SUITE"),
    "crafter": ("tasks.crafter", "SUITE"),
    "dmc_vision": ("tasks.dmc", "VISION_SUITE"),
    "dmc_proprio": ("tasks.dmc", "PROPRIO_SUITE"),
    "minihack": ("tasks.minihack", "SUITE"),
    "pinpad": ("tasks.pinpad", "SUITE"),
}
EXPECTED = {  # name: (number of tasks, budget in agent steps, eval protocol, normaliser)
    "atari100k": (26, 100_000, "final_eval", "human"),
    "crafter": (1, 1_000_000, "crafter_score", "crafter"),
    "dmc_vision": (20, 500_000, "final_eval", "div1000"),
    "dmc_proprio": (18, 250_000, "final_eval", "div1000"),
    "minihack": (17, 1_000_000, "success_rate", "identity"),
    "pinpad": (3, 1_000_000, "final_eval", "identity"),
}


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_is_registered_with_its_protocol(name):
    suite = registry.get_suite(name)
    module, attribute = SUITES[name]
    assert suite is getattr(importlib.import_module(module), attribute)
    assert suite.name == name
    assert (len(suite.tasks), suite.budget, suite.eval_protocol, suite.normaliser) == EXPECTED[name]
    assert len(set(suite.tasks)) == len(suite.tasks)
    # The protocol is a frozen dataclass with defaults: it becomes the `env` section of the run config.
    protocol = suite.protocol_cls()
    assert dataclasses.is_dataclass(protocol)
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol.image_size = 1
    # make_env must be importable by name in a fresh worker process.
    make_env = suite.make_env
    assert getattr(importlib.import_module(make_env.__module__), make_env.__qualname__) is make_env
    # The manifest records the protocol next to the suite's scoring.
    recorded = registry.protocol_dict(suite, protocol)
    assert recorded["normaliser"] == suite.normaliser
    for field in dataclasses.fields(protocol):
        assert field.name in recorded


@pytest.mark.parametrize("name", sorted(SUITES))
def test_unknown_task_lists_the_suite_tasks(name):
    suite = registry.get_suite(name)
    with pytest.raises(KeyError) as error:
        suite.resolve_task("no_such_task")
    message = str(error.value)
    assert "no_such_task" in message and all(task in message for task in suite.tasks)


def test_protocol_values_are_checked_and_named():
    from tasks.atari import AtariProtocol
    from tasks.minihack import MiniHackProtocol

    with pytest.raises(ValueError, match=r"env.sticky_actions=1.5"):
        AtariProtocol(sticky_actions=1.5)
    with pytest.raises(ValueError, match=r"env.eval_protocol='best'.*final_eval"):
        AtariProtocol(eval_protocol="best")
    with pytest.raises(ValueError, match=r"env.crop_tiles=4.*odd"):
        MiniHackProtocol(crop_tiles=4)
    with pytest.raises(ValueError, match=r"env.resize='area'.*only shrinks"):
        MiniHackProtocol(crop_tiles=3, resize="area")  # a 48 px crop enlarged to 64
    assert MiniHackProtocol(resize="area").resize == "area"  # 80 px -> 64 shrinks
    # The same checks run on dotted command-line overrides of the `env` section.
    config = config_lib.Config(
        run=config_lib.RunConfig(), replay=config_lib.ReplayConfig(), logger=config_lib.LoggerConfig(),
        env=AtariProtocol(), agent=config_lib.RunConfig(),
    )  # fmt: skip
    assert config_lib.apply(config, {"env.life_loss_terminal": "true"}).env.life_loss_terminal is True
    with pytest.raises(ValueError, match="env.noops"):
        config_lib.apply(config, {"env.noops": "-1"})


def test_importing_suites_does_not_import_simulators():
    # `bench list` imports every suite module; the simulators load only inside make_env.
    code = (
        "import sys, tasks.atari, tasks.crafter, tasks.dmc, tasks.minihack, tasks.pinpad\n"
        "heavy = [m for m in ('ale_py', 'crafter', 'dm_control', 'mujoco', 'minihack', 'nle') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_derived_seeds_are_stable_and_independent():
    assert wrappers.derive_seed(7, "noops") == wrappers.derive_seed(7, "noops")
    assert wrappers.derive_seed(7, "noops") != wrappers.derive_seed(7, "sticky")
    assert wrappers.derive_seed(7, "noops") != wrappers.derive_seed(8, "noops")
    assert 0 <= wrappers.derive_seed(2**40, "x", bits=63) < 2**63
    first = wrappers.episode_rng(3, "a").integers(1 << 30, size=4)
    assert (first == wrappers.episode_rng(3, "a").integers(1 << 30, size=4)).all()


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)])
def test_bad_seeds_are_rejected(seed, error):
    with pytest.raises(error, match="seed"):
        wrappers.check_seed(seed)


def test_resize_and_grayscale():
    image = np.zeros((210, 160, 3), np.uint8)
    image[:105] = 255
    small = wrappers.resize_image(image, 64, "bilinear")
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8
    assert small[0, 0, 0] == 255 and small[-1, 0, 0] == 0
    assert wrappers.resize_image(small, 64, "nearest") is small
    grey = wrappers.to_grayscale(image)
    assert grey.shape == (210, 160, 1) and grey[0, 0, 0] == 255
    assert wrappers.resize_image(grey, 32, "area").shape == (32, 32, 1)
    with pytest.raises(ValueError, match="resize method"):
        wrappers.resize_image(image, 64, "cubic")


def test_area_resize_weighs_overlaps_as_opencv_inter_area():
    # 3 -> 2 px (s = 1.5): output 0 covers [0, 1.5) -> weights (1, 0.5) / 1.5 = (2/3, 1/3, 0), output 1 covers
    # [1.5, 3) -> (0, 1/3, 2/3). Image 9 (3 r + c + 1): 9 (3 E[r] + E[c] + 1) with E = 1/3 or 5/3.
    r, c = np.mgrid[0:3, 0:3]
    image = (9 * (3 * r + c + 1)).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(wrappers.area_resize(image, 2, 2)[..., 0], [[21, 33], [57, 69]])
    # 5 -> 2 px (s = 2.5, Atari's width ratio): (0.4, 0.4, 0.2, 0, 0) and (0, 0, 0.2, 0.4, 0.4), E = 0.8, 3.2.
    r, c = np.mgrid[0:5, 0:5]
    image = np.repeat((20 * r + 5 * c).astype(np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(wrappers.area_resize(image, 2, 2)[..., 1], [[20, 32], [68, 80]])
    # both at once, 5 rows x 3 columns: 20 E5[r] + 9 E3[c]
    r, c = np.mgrid[0:5, 0:3]
    image = (20 * r + 9 * c).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(wrappers.area_resize(image, 2, 2)[..., 0], [[19, 31], [67, 79]])
    assert (wrappers.resize_image(image, 2, "area") == wrappers.area_resize(image, 2, 2)).all()


def overlap_weights(source: int, target: int) -> np.ndarray:
    """(target, source): the length of [d s, (d + 1) s) inside source pixel [k, k + 1), over s."""
    scale = source / target
    starts = np.arange(target)[:, None] * scale
    k = np.arange(source)[None, :]
    return np.clip(np.minimum(starts + scale, k + 1) - np.maximum(starts, k), 0, None) / scale


def test_area_resize_of_an_atari_frame_is_the_overlap_mean():
    frame = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    weights_y, weights_x = overlap_weights(210, 64), overlap_weights(160, 64)
    exact = np.einsum("ik,jl,klc->ijc", weights_y, weights_x, frame.astype(float))
    resized = wrappers.resize_image(frame, 64, "area")
    near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3  # float32 arithmetic may round these either way
    np.testing.assert_array_equal(resized[~near_tie], np.rint(exact)[~near_tie])
    assert near_tie.mean() < 0.01


def test_area_resize_integer_factors_round_like_opencv():
    # 2x2 blocks (1, 3 or 4 channels): (sum + 2) >> 2, i.e. half up: sums 2, 6, 10 -> 1, 2, 3
    blocks = np.array([[0, 1, 1, 2, 2, 3], [0, 1, 1, 2, 2, 3]], np.uint8)
    np.testing.assert_array_equal(wrappers.area_resize(blocks[..., None], 1, 3)[0, :, 0], [1, 2, 3])
    rgb = np.repeat(blocks[..., None], 3, axis=-1)
    np.testing.assert_array_equal(wrappers.area_resize(rgb, 1, 3)[0], [[1] * 3, [2] * 3, [3] * 3])
    # other integer factors: sum * float32(1 / area), half to even: pairs 0+1, 1+2, 2+3 -> 0, 2, 2
    pairs = np.array([[0, 1, 1, 2, 2, 3]], np.uint8)[..., None]
    np.testing.assert_array_equal(wrappers.area_resize(pairs, 1, 3)[0, :, 0], [0, 2, 2])
    # 3x3 blocks: the plain mean
    image = np.arange(36, dtype=np.uint8).reshape(6, 6)[..., None]
    expected = image[..., 0].reshape(2, 3, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(wrappers.area_resize(image, 2, 2)[..., 0], np.rint(expected))
    with pytest.raises(ValueError, match="only shrinks"):
        wrappers.area_resize(image, 12, 12)


def test_episode_guard_names_the_fix():
    guard = wrappers.EpisodeGuard("demo")
    with pytest.raises(RuntimeError, match=r"demo: step\(\) .* call reset\(seed=...\)"):
        guard.check_step()
    guard.start()
    guard.check_step()
    guard.finish(is_last=True)
    with pytest.raises(RuntimeError):
        guard.check_step()
