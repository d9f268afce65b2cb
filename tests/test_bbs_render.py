"""BringBackShapes drawing: shapes, static layer, and the fast view against a plain float reference."""

import numpy as np
import pytest

from tasks.bbs import arena as arena_lib
from tasks.bbs import render
from tasks.bbs.env import BBSProtocol, BringBackShapes


def test_centred_shapes_have_their_centroid_at_the_origin():
    triangle = arena_lib.centred([(0, 0), (50, 0), (25, 25)])
    # centroid of a triangle = mean of its corners: (25, 25/3)
    np.testing.assert_allclose(np.sort(triangle[:, 0]), [-25.0, 0.0, 25.0])
    np.testing.assert_allclose(np.sort(triangle[:, 1]), [-25 / 3, -25 / 3, 50 / 3])
    for vertices in [*arena_lib.CENTRED_OBJECT_SHAPES.values(), arena_lib.CENTRED_DISTRACTOR]:
        np.testing.assert_allclose(arena_lib.centred(vertices), vertices, atol=1e-9)  # already centred
        following = np.roll(vertices, -1, axis=0)
        assert (vertices[:, 0] * following[:, 1] - following[:, 0] * vertices[:, 1]).sum() > 0  # winding


def test_drawn_vertices_match_pymunk_bodies():
    env = BringBackShapes(BBSProtocol(num_distractors=1, arena_scale=1.0))
    env.reset(seed=3)
    shapes = env.arena.drawables()
    bodies = [env.arena.agent] + [d.body for d in env.arena.distractors] + [o.body for o in env.arena.objects]
    pymunk_shapes = [None] + [d.shape for d in env.arena.distractors] + [o.shape for o in env.arena.objects]
    assert [kind for kind, _, _ in shapes] == ["circle"] + ["polygon"] * 6
    for (kind, geometry, _), body, shape in zip(shapes, bodies, pymunk_shapes):
        if kind == "circle":
            np.testing.assert_allclose(geometry, [*body.position, 15.0])
            continue
        expected = np.array([tuple(body.local_to_world(v)) for v in shape.get_vertices()])
        # same vertex set (pymunk may start the polygon at another corner)
        distances = np.linalg.norm(geometry[:, None] - expected[None], axis=-1)
        assert distances.min(axis=1).max() < 1e-9 and len(geometry) == len(expected)


def test_inside_polygon_uses_pixel_centres():
    square = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])  # positive signed area
    columns = np.arange(5) + 0.5
    mask = render._inside_polygon(square, columns, columns)
    expected = np.zeros((5, 5), bool)
    expected[1:3, 1:3] = True  # centres 1.5 and 2.5 lie inside [1, 3]
    np.testing.assert_array_equal(mask, expected)


def test_static_layer_colours():
    layout = arena_lib.Layout.create(1.0)
    image = render.unspread(render.static_layer(layout))
    assert image.shape == (700, 800, 3)
    assert image[350, 400].tolist() == [0, 0, 0]  # floor
    assert image[10, 10].tolist() == list(render.WALL_COLOUR)  # outer wall
    assert image[350, 600].tolist() == list(render.GOAL_COLOUR)  # the slot (x 575..675, y 237.5..462.5)
    assert image[200, 600].tolist() == list(render.WALL_COLOUR)  # block above the slot
    assert image[350, 700].tolist() == list(render.WALL_COLOUR)  # right wall behind the slot


def test_spread_colours_round_trip():
    colours = [(0, 0, 0), (255, 255, 255), (70, 130, 180), (1, 2, 3)]
    words = np.array([render.spread(c) for c in colours])
    np.testing.assert_array_equal(render.unspread(words), np.array(colours, np.uint8))


def reference_view(env) -> np.ndarray:
    """The plain pipeline: draw the whole crop, bilinear shrink in float (cv2 INTER_LINEAR), tint, round."""
    x, y = env._camera()
    size = env.protocol.view_size
    crop = render.rasterise(env._background, env.arena.drawables(), x + np.arange(size), y + np.arange(size))
    crop = render.unspread(crop).astype(np.float64)
    out = env.protocol.image_size
    source = (np.arange(out) + 0.5) * size / out - 0.5
    first = np.floor(source).astype(int)
    weight = source - first
    second = np.minimum(first + 1, size - 1)
    rows = crop[first] * (1 - weight)[:, None, None] + crop[second] * weight[:, None, None]
    image = rows[:, first] * (1 - weight)[None, :, None] + rows[:, second] * weight[None, :, None]
    return np.rint(image * (1 - 100 / 255) + 128 * 100 / 255)


@pytest.mark.parametrize("view_size, image_size", [(250, 64), (200, 64), (250, 96)])
def test_fast_view_matches_the_plain_pipeline(view_size, image_size):
    protocol = BBSProtocol(num_distractors=2, arena_scale=1.0, view_size=view_size, image_size=image_size)
    env = BringBackShapes(protocol)
    exact = render.ViewRenderer(view_size, image_size, exact_pixels=True)
    rng = np.random.default_rng(0)
    for seed in range(3):
        obs = env.reset(seed=seed)
        for step in range(30):
            if step % 10 == 0:
                camera = env._camera()
                # drawing only the pixels the shrink reads is the same as drawing them all
                everything = exact.observe(env._background, env.arena.drawables(), camera)
                np.testing.assert_array_equal(obs["image"], everything)
                # fixed-point weights stay within one level of the float pipeline
                difference = np.abs(obs["image"].astype(int) - reference_view(env))
                assert difference.max() <= 1 and difference.mean() < 0.05
            obs = env.step({"action": rng.uniform(-1, 1, 2).astype(np.float32)})


def test_full_arena_render_shows_the_tinted_view():
    env = BringBackShapes(BBSProtocol(num_distractors=0, arena_scale=1.2))
    env.reset(seed=0)
    env.arena.agent.position = (300.0, 300.0)
    for index, item in enumerate(env.arena.objects):
        item.body.position = (180.0 + 70 * index, 520.0)
    frame = env.render()
    assert frame.shape == (840, 960, 3) and frame.dtype == np.uint8
    assert env._camera() == (175, 175)  # the view square is [175, 425) x [175, 425)

    def tinted(colour):
        return [round(c * (1 - 100 / 255) + 128 * 100 / 255) for c in colour]

    assert frame[300, 300].tolist() == tinted(arena_lib.AGENT_COLOUR)
    assert frame[400, 200].tolist() == tinted((0, 0, 0))  # floor inside the view
    assert frame[300, 650].tolist() == [0, 0, 0]  # floor outside it
    assert frame[520, 180 + 140].tolist() == list(env.arena.objects[2].colour)  # an object, untinted
