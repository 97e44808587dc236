"""Designing one synthetic car: its side profile (body, cabin, windows, wheels), paint and size, drawn by
shared/data/car_render.py. Every random choice comes from the numpy generator passed in."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Car paints (RGB), each jittered a little per car.
PAINTS = (
    (236, 236, 234), (186, 188, 192), (118, 120, 124), (30, 30, 33), (168, 28, 32), (34, 62, 140),
    (26, 36, 72), (32, 84, 54), (204, 188, 152), (212, 104, 34), (222, 192, 46), (96, 24, 40),
)


@dataclass(frozen=True, eq=False)
class Car:
    """One car's shape, paint and studio, in car units: length 1, x from rear (0) to front (1), y up from the ground."""

    car_id: str
    profile: np.ndarray  # (n, 2) closed, rounded side outline starting at the middle of the underside
    roof_index: int  # profile[:roof_index + 1] is the rear chain (underside to roof), the rest the front chain
    window: np.ndarray  # (4, 2) the side window of the near side
    pillar_x: float  # the B-pillar between the two side windows
    door_x: tuple[float, ...]  # the door seams
    clearance: float  # underside height
    belt: float  # height of the window sill (below it the car has its full width)
    roof: float  # roof height
    width: float  # car width (at and below the belt)
    wheel_x: tuple[float, float]  # rear and front axle
    wheel_r: float
    paint: tuple[int, int, int]
    glass: tuple[int, int, int]
    length_frac: float  # car length as a share of the image width (before fitting)
    center_frac: float  # horizontal position of the turntable centre
    ground_frac: float  # height of the wheels' contact line, as a share of the image height
    floor_frac: float  # the wall/floor junction, as a share of the image height
    yaw: float  # degrees added to every turntable angle
    wall: tuple[tuple[int, int, int], tuple[int, int, int]]  # top and bottom colours of the wall
    floor: tuple[tuple[int, int, int], tuple[int, int, int]]  # far and near colours of the floor


def _rounded(corners: list[tuple[float, float, float]]) -> tuple[np.ndarray, list[int]]:
    """A closed polygon whose corners (x, y, radius) are replaced by quadratic Beziers; also each corner's first
    index."""
    points: list[tuple[float, float]] = []
    starts: list[int] = []
    n = len(corners)
    for i, (x, y, radius) in enumerate(corners):
        starts.append(len(points))
        if radius <= 0:
            points.append((x, y))
            continue
        corner = np.array([x, y])
        ends = []
        for j in (i - 1, (i + 1) % n):  # back along the incoming edge, forward along the outgoing one
            other = np.array(corners[j][:2])
            length = float(np.hypot(*(other - corner)))
            ends.append(corner + (other - corner) * min(radius, 0.45 * length) / length)
        for t in np.linspace(0.0, 1.0, 7):  # Bezier with the corner as control point keeps the chain monotone in y
            points.append(tuple((1 - t) ** 2 * ends[0] + 2 * t * (1 - t) * corner + t ** 2 * ends[1]))
    return np.array(points), starts


def _jitter(color: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def design_car(car_id: str, rng: np.random.Generator) -> Car:
    """A random car: body style, proportions, paint and studio, all drawn from rng."""
    style = rng.choice(["sedan", "hatchback", "suv", "coupe"], p=[0.4, 0.25, 0.25, 0.1])
    clearance = rng.uniform(0.03, 0.045) + (0.015 if style == "suv" else 0.0)
    belt = clearance + rng.uniform(0.15, 0.18) + (0.03 if style == "suv" else 0.0)
    cabin = {"sedan": (0.10, 0.125), "hatchback": (0.11, 0.135), "suv": (0.13, 0.15), "coupe": (0.085, 0.10)}[style]
    roof = belt + rng.uniform(*cabin)
    if style == "sedan":
        rear_base, roof_rear = rng.uniform(0.13, 0.19), rng.uniform(0.29, 0.33)
    elif style == "coupe":
        rear_base, roof_rear = rng.uniform(0.10, 0.15), rng.uniform(0.33, 0.38)
    else:  # hatchback and suv: the rear window runs down to the tail
        rear_base, roof_rear = rng.uniform(0.02, 0.04), rng.uniform(0.06, 0.12)
    roof_front = rng.uniform(0.56, 0.62) + (0.04 if style == "suv" else 0.0)
    shield_base = roof_front + rng.uniform(0.13, 0.17)
    tail_top = belt - (0.0 if style in ("hatchback", "suv") else rng.uniform(0.015, 0.03))
    hood_front = belt - rng.uniform(0.02, 0.045)
    corners = [
        (0.5, clearance, 0.0),  # middle of the underside: where the front chain ends and the rear chain starts
        (0.05, clearance, 0.03),
        (0.0, clearance + 0.05, 0.025),
        (0.0 if style in ("hatchback", "suv") else 0.005, tail_top, 0.03),
        (rear_base, belt + 0.002, 0.02),
        (roof_rear, roof, 0.05),
        ((roof_rear + roof_front) / 2, roof, 0.0),  # middle of the roof: where the rear chain ends
        (roof_front, roof, 0.05),
        (shield_base, belt + 0.002, 0.02),
        (0.975, hood_front, 0.04),
        (1.0, clearance + 0.055, 0.03),
        (0.95, clearance, 0.03),
    ]
    profile, starts = _rounded(corners)
    pillar_x = roof_rear + rng.uniform(0.42, 0.5) * (roof_front - roof_rear)
    window = np.array([
        (rear_base + 0.035, belt + 0.012),
        (roof_rear + 0.03, roof - 0.016),
        (roof_front - 0.02, roof - 0.016),
        (shield_base - 0.04, belt + 0.012),
    ])
    wheel_r = rng.uniform(0.068, 0.08) + (0.006 if style == "suv" else 0.0)
    wheel_x = (rng.uniform(0.17, 0.21), rng.uniform(0.79, 0.83))
    # Studio greys with a faint tint: the same light grey for all channels, then a few levels per channel.
    wall_top = _jitter((int(rng.integers(200, 242)),) * 3, rng, 3)
    floor_far = _jitter((int(rng.integers(165, 205)),) * 3, rng, 3)
    return Car(
        car_id=car_id,
        profile=profile,
        roof_index=starts[6],  # the roof-middle corner
        window=window,
        pillar_x=pillar_x,
        door_x=(shield_base - 0.03, pillar_x, rear_base + 0.1 if style != "suv" else 0.22),
        clearance=clearance,
        belt=belt,
        roof=roof,
        width=rng.uniform(0.43, 0.48),
        wheel_x=wheel_x,
        wheel_r=wheel_r,
        paint=_jitter(PAINTS[int(rng.integers(len(PAINTS)))], rng, 12),
        glass=_jitter((40, 48, 60), rng, 10),
        length_frac=rng.uniform(0.76, 0.82),
        center_frac=rng.uniform(0.47, 0.53),
        ground_frac=rng.uniform(0.8, 0.87),
        floor_frac=rng.uniform(0.45, 0.62),
        yaw=rng.uniform(-4.0, 4.0),
        wall=(wall_top, _jitter(tuple(c - 16 for c in wall_top), rng, 2)),
        floor=(floor_far, _jitter(tuple(min(255, c + 24) for c in floor_far), rng, 2)),
    )
