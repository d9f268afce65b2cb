"""THICK's MiniHack levels, cell by cell: our level files and the levels MiniHack builds from them.

The expected maps and placements are embedded here, copied from the project's reference sheet of level facts
(`reference/levels.md`, read from THICK's published `thick/des_envs/*.des`), not derived from our level files.
Two checks per level: the MAP block and the flags/attributes of our .des file (terrain letters exactly), and
the screen of the level MiniHack builds at reset (every wall, floor, liquid, door and stair cell, and where
the player, items and monsters are).
"""

import re

import numpy as np
import pytest
from nle import nethack

from tasks.minihack import TASKS, MiniHackEnv, level_text

# ------------------------------------------------------------------------- expected (copied from levels.md)

KEYCORRIDOR4 = (
    "|.|",
    "|.||||",
    "|....|",
    "|....|",
    "||||||",
)
ESCAPEROOM = (
    "  |||||||",
    "  |.....|",
    "  |.|||L|",
    "  |W| |L|",
    "  |.|||.|",
    "|||.....|",
    "|.......|",
    "|||.....|",
    "  |||||||",
)
LAVACROSSING = ("-------------",) + ("|.....L.....|",) * 5 + ("-------------",)
MINIWOD = (
    "|--------------",
    "|.............|",
    "|.....|--------",
    "|.....|",
    "|.....|",
    "|-----|",
)


def keycorridor(n):
    """The keycorridorN map: the N=4 map of levels.md with the room N cells wide."""
    return ("|.|", "|." + "|" * n, "|" + "." * n + "|", "|" + "." * n + "|", "|" * (n + 2))


def box(x0, y0, x1, y1):
    return {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


# Placements: symbol -> fixed (x, y) cell or a set of allowed cells (random placement). '@' is the player.
# `hidden`: items out of the player's sight at reset (premapped shows terrain and boulders only); the escape
# rooms' key is checked by walking to it (test_escape_room_key_lies_where_the_map_says).
LEFT_BANK = box(1, 1, 5, 5)
LEVELS = {
    **{
        f"keycorridor{n}.des": dict(
            map=keycorridor(n),
            flags={"premapped"},
            place={">": (1, 0), "+": (1, 1), "@": (1, 2), "(": (n, 3)},
        )
        for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12)
    },
    "escaperoom.des": dict(
        map=ESCAPEROOM,
        flags={"premapped"},
        place={">": (1, 6), "+": (2, 6), "@": (7, 7), "`": (3, 2), "=": (3, 7)},
        hidden={"(": (5, 1)},
    ),
    # levels.md: "escaperoomwater: W instead of L"; its map puts them at x=7 (the prose's (6,2), (6,3) is a slip).
    "escaperoomwater.des": dict(
        map=tuple(row.replace("L", "W") for row in ESCAPEROOM),
        flags={"premapped"},
        place={">": (1, 6), "+": (2, 6), "@": (7, 7), "`": (3, 2), "=": (3, 7)},
        hidden={"(": (5, 1)},
    ),
    "lavacrossing.des": dict(
        map=LAVACROSSING,
        flags={"hardfloor"},
        place={"@": LEFT_BANK, "=": LEFT_BANK, ">": box(7, 1, 11, 5)},
    ),
    "watercrossing.des": dict(
        map=("-------------",) + ("|.....WW....|",) * 5 + ("-------------",),
        flags={"premapped"},
        place={"@": LEFT_BANK, "=": LEFT_BANK, ">": box(8, 1, 11, 5)},
    ),
    "miniwod.des": dict(
        map=MINIWOD,
        flags={"premapped"},
        place={"@": (1, 1), "H": (10, 1), ">": (13, 1), "/": box(2, 2, 4, 4)},
    ),
}
# NetHack 3.6 defsym order (rm.h): S_lava = 34, S_water = 41 (the des letters L and W; a pool 'P' is 32).
LIQUID_CMAP = {"L": 34, "W": 41}


def test_every_custom_level_is_checked():
    assert {spec.level for spec in TASKS.values() if spec.level} == set(LEVELS)
    assert keycorridor(4) == KEYCORRIDOR4


# ------------------------------------------------------------------------------------ our level files


def des_lines(level):
    return [line for line in level_text(level).splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_level_file_map_flags_and_objects(level):
    expected = LEVELS[level]
    text = "\n".join(des_lines(level))
    rows = text.split("\nMAP\n", 1)[1].split("\nENDMAP", 1)[0].split("\n")
    assert tuple(rows) == expected["map"]
    flags = re.search(r"^FLAGS:\s*(.*)$", text, re.M).group(1)
    assert {flag.strip() for flag in flags.split(",")} == expected["flags"]
    if level.startswith("keycorridor"):
        n = int(level[len("keycorridor") : -len(".des")])
        assert re.search(
            rf'^OBJECT: \(\'\(\', "skeleton key"\), \({n},3\), blessed, 0, '
            r'name:"The Master Key of Thievery"$',
            text,
            re.M,
        )
    if level.startswith("escaperoom"):
        assert re.search(r'^OBJECT: \(\'\(\', "skeleton key"\), \(5,1\), blessed$', text, re.M)
    if level.startswith("escaperoom") or "crossing" in level:
        assert re.search(r'^OBJECT: \(\'=\', "levitation"\), .*, blessed$', text, re.M)
    if level == "miniwod.des":
        assert re.search(r'^OBJECT: \(\'/\', "death"\), rndcoord\(\$safe_room\), blessed$', text, re.M)
        assert re.search(r'^MONSTER: \(\'H\', "minotaur"\), \(10,1\), asleep$', text, re.M)


# ------------------------------------------------------------------------------- the levels MiniHack builds


def check_screen(env, level):
    """Compare the screen at reset with the expected map and placements; returns the placements seen."""
    expected = LEVELS[level]
    chars, glyphs = env._raw("chars"), env._raw("glyphs")
    rows = expected["map"]
    height, width = len(rows), max(len(row) for row in rows)
    ys, xs = np.nonzero(chars != ord(" "))
    top, left = ys.min(), xs.min()
    assert (ys.max() - top + 1, xs.max() - left + 1) == (height, width), f"{level}: map size on screen"
    shown = {}
    for y in range(height):
        for x in range(width):
            char = chr(chars[top + y, left + x])
            if char in "@>+(`=/H":
                shown[char] = (x, y)
    for symbol, where in expected["place"].items():
        if isinstance(where, tuple):
            assert shown.get(symbol) == where, f"{level}: {symbol!r} at {shown.get(symbol)}, expected {where}"
        elif symbol in shown:
            assert shown[symbol] in where, f"{level}: {symbol!r} at {shown[symbol]}, outside its area"
        else:  # an item under the player is hidden by it
            assert symbol != "@" and shown["@"] in where, f"{level}: {symbol!r} is missing"
    assert set(shown) <= set(expected["place"]), f"{level}: unexpected {shown}"
    occupied = set(shown.values())
    for y in range(height):
        for x in range(width):
            cell = rows[y][x] if x < len(rows[y]) else " "
            char = chr(chars[top + y, left + x])
            where = f"{level}: cell ({x},{y}) {cell!r} shown as {char!r}"
            if (x, y) in occupied:
                assert cell == ".", where  # everything is placed on floor cells
            elif cell in "|-":
                assert char in "|-", where  # NetHack draws each wall by its junctions
            elif cell in LIQUID_CMAP:
                cmap = glyphs[top + y, left + x] - nethack.GLYPH_CMAP_OFF
                assert char == "}" and cmap == LIQUID_CMAP[cell], where
            else:
                assert char == cell, where
    return shown


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_built_level_matches_the_published_map(level):
    task = next(name for name, spec in TASKS.items() if spec.level == level)
    env = MiniHackEnv(task)
    randomised = any(isinstance(where, set) for where in LEVELS[level]["place"].values())
    for seed in range(3 if randomised else 1):
        env.reset(seed=seed)
        check_screen(env, level)
    env.close()


def test_screen_check_catches_a_wrong_cell():
    # The check itself must fail on a level that differs in one cell (here: lava where the map has water).
    env = MiniHackEnv("escaperoom")
    env.reset(seed=0)
    with pytest.raises(AssertionError, match=r"cell \(7,2\)"):
        check_screen(env, "escaperoomwater.des")
    env.close()


def test_escape_room_key_lies_where_the_map_says():
    # Out of sight at reset, so walk to it: the ring (worn on pickup) carries the player over the east liquid.
    for task in ("escaperoom", "escaperoomwater"):
        env = MiniHackEnv(task)
        env.reset(seed=0)
        start = tuple(int(v) for v in env._raw("blstats")[:2])
        for name in ["west"] * 4 + ["pickup"] + ["east"] * 4 + ["north"] * 6 + ["west"] * 2:
            env.step({"action": env.actions.index(name)})
        x, y = (int(v) for v in env._raw("blstats")[:2])
        player = LEVELS[f"{task}.des"]["place"]["@"]
        assert (x - start[0] + player[0], y - start[1] + player[1]) == LEVELS[f"{task}.des"]["hidden"]["("]
        env._press(int(nethack.Command.LOOK))
        assert "key" in env._message(), env._message()
        env.close()


# ------------------------------------------------------------------------------------------------ flags


def test_autopickup_follows_thick():
    # THICK: miniwod is a MiniHackSkill env (autopickup off); keycorridor, escape rooms and crossings are
    # MiniHackKeyDoor envs (off); river is MiniHackRiver, a navigation env (on).
    assert {name for name, spec in TASKS.items() if spec.autopickup} == {"river"}
    env = MiniHackEnv("miniwod")
    env.reset(seed=0)
    wand = next(
        (x, y) for y, row in enumerate(env._raw("chars")) for x, char in enumerate(row) if char == ord("/")
    )
    start = tuple(int(v) for v in env._raw("blstats")[:2])
    for _ in range(wand[1] - start[1]):
        env.step({"action": env.actions.index("south")})
    for _ in range(wand[0] - start[0]):
        env.step({"action": env.actions.index("east")})
    assert tuple(int(v) for v in env._raw("blstats")[:2]) == wand
    assert env._find("wand") is None  # standing on the wand does not pick it up
    env.step({"action": env.actions.index("pickup")})
    assert env._find("wand") is not None
    env.close()
