"""Drawing one synthetic car photo and its mask (shared/data/synthetic_cars.py writes them as a Carvana folder).

Each car (shared/data/car_design.py) is a side profile (body, cabin, windows, wheels) extruded across its width
and turned on a turntable, so the 16 angles change its apparent length, the end (front or rear) that faces the camera,
and which way it points. The studio (wall/floor gradients, a floor line, a soft shadow, sensor noise)
is drawn at 1/8 scale and enlarged; the car is drawn at full size, and the photo takes the car's pixels
exactly where the mask is 1. Every random choice comes from the numpy generator passed in.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from shared.data.car_design import Car

ANGLES = tuple(f"{i:02d}" for i in range(1, 17))  # the turntable steps, 22.5 degrees apart
NOISE_SIGMA = 2.0  # sensor noise, in 8-bit levels
BACKGROUND_SCALE = 8  # the studio is smooth, so it is drawn this many times smaller and enlarged

# A 256-entry table from uniform bytes to Gaussian quantiles, offset so it stays unsigned:
# with PIL's point() and ImageChops.add this adds Gaussian noise in C, far faster than numpy here.
_NOISE_OFFSET = 16
_NOISE_TABLE = [int(round(NormalDist(0.0, NOISE_SIGMA).inv_cdf((i + 0.5) / 256))) + _NOISE_OFFSET for i in range(256)]


def _shade(color: tuple[int, int, int], factor: float, lift: int = 0) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor + lift))) for c in color)


class _View:
    """A car on the turntable at one angle, projected onto the image (orthographic, camera at car height).

    The silhouette of a profile extruded across a width d is the profile (compressed by |sin|) widened
    by d |cos|: the chain on the screen's left moves left by half of that and the other chain right.
    The side nearest the camera is the copy away from the visible end face.
    """

    def __init__(self, car: Car, angle_index: int, size: tuple[int, int]):
        width, height = size
        theta = math.radians(angle_index * 360.0 / len(ANGLES) + car.yaw)
        self.car = car
        self.sin, self.cos = abs(math.sin(theta)), abs(math.cos(theta))
        self.facing = 1.0 if math.sin(theta) >= 0 else -1.0  # +1: the front points right
        face_side = self.facing if math.cos(theta) > 0 else -self.facing  # the end face's side of the screen
        self.front_visible = math.cos(theta) > 0
        self.near, self.far = -face_side, face_side
        self.ground = car.ground_frac * height
        widest = math.hypot(1.0, car.width)  # largest apparent length over all angles
        self.scale = min(car.length_frac * width, 0.94 * width / widest, (self.ground - 0.06 * height) / car.roof)
        self.center = car.center_frac * width

    def half_depth(self, y: np.ndarray) -> np.ndarray:
        """Half the screen offset between the near and far copies at height y (the cabin tapers above the belt)."""
        car = self.car
        taper = 1.0 - 0.22 * np.clip((y - car.belt) / (car.roof - car.belt), 0.0, 1.0)
        return 0.5 * car.width * taper * self.cos * self.scale

    def project(self, points: np.ndarray, side: float) -> list[tuple[float, float]]:
        """Car-unit points (x, y) of the copy on `side` (-1 left, +1 right, 0 centre) as pixel coordinates."""
        x, y = points[:, 0], points[:, 1]
        u = self.center + self.facing * (x - 0.5) * self.scale * self.sin + side * self.half_depth(y)
        v = self.ground - y * self.scale
        return list(zip(u.tolist(), v.tolist()))

    def chains(self) -> tuple[np.ndarray, np.ndarray]:
        """The rear chain (underside to roof) and the front chain (roof to underside) of the profile."""
        car = self.car
        rear = car.profile[: car.roof_index + 1]
        front = np.vstack([car.profile[car.roof_index:], car.profile[:1]])
        return rear, front

    def silhouette(self) -> list[tuple[float, float]]:
        rear, front = self.chains()
        # The rear chain is on the screen's left when the car points right.
        return self.project(rear, -self.facing) + self.project(front, self.facing)

    def wheels(self, side: float) -> list[tuple[float, float, float, float]]:
        """Bounding boxes of the two wheels of the copy on `side`, set slightly in from the body's edge."""
        car = self.car
        r = car.wheel_r * self.scale
        rx = r * max(self.sin, 0.3)  # seen end on, a tyre still shows its tread width
        boxes = []
        for x in car.wheel_x:
            (u, v), = self.project(np.array([[x, car.wheel_r]]), 0.0)
            u += side * 0.85 * float(self.half_depth(np.array(car.wheel_r)))
            boxes.append((u - rx, v - r, u + rx, v + r))
        return boxes

    def end_points(self, ys: np.ndarray) -> np.ndarray:
        """Points (x, y) of the visible end's outline (front or rear chain) at heights ys."""
        rear, front = self.chains()
        chain = front if self.front_visible else rear
        order = np.argsort(chain[:, 1], kind="stable")
        return np.column_stack([np.interp(ys, chain[order, 1], chain[order, 0]), ys])

    def end_band(self, y0: float, y1: float, inset: float = 0.0) -> list[tuple[float, float]] | None:
        """The visible end face between heights y0 and y1: its near edge, then its far edge back down."""
        points = self.end_points(np.linspace(y0, y1, 12))
        near = self.project(points, self.near * (1.0 - inset))
        far = self.project(points, self.far * (1.0 - inset))
        if abs(near[len(near) // 2][0] - far[len(far) // 2][0]) < 3:
            return None  # seen side on: no face worth drawing
        return near + far[::-1]


def _box(center: tuple[float, float], rx: float, ry: float) -> tuple[float, float, float, float]:
    return (center[0] - rx, center[1] - ry, center[0] + rx, center[1] + ry)


def _draw_car(view: _View, photo: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw) -> None:
    """Draw the car's mask (255 = car: body, cabin, windows, wheels) and its look (colours, details)."""
    car, scale = view.car, view.scale
    line = max(1, round(0.0025 * scale))
    tyre, rim = (24, 24, 26), (172, 174, 178)
    body = view.silhouette()
    for shape in ([("ellipse", box) for box in view.wheels(view.far)] + [("polygon", body)]
                  + [("ellipse", box) for box in view.wheels(view.near)]):
        getattr(mask, shape[0])(shape[1], fill=255)

    # The far wheels, and seen end on the near ones too, stand behind the bumpers: drawn before the body.
    near_in_front = view.sin > 0.2
    for box in view.wheels(view.far) + ([] if near_in_front else view.wheels(view.near)):
        photo.ellipse(box, fill=tyre)
    photo.polygon(body, fill=car.paint)
    # A darker sill along the bottom and a lighter shoulder just under the windows.
    rear, front = view.chains()
    for y0, y1, color in ((car.clearance + 0.003, car.clearance + 0.045, _shade(car.paint, 0.72)),
                          (car.belt - 0.03, car.belt - 0.012, _shade(car.paint, 1.08, 12))):
        band = []
        for chain, side, flip in ((rear, -view.facing, False), (front, view.facing, True)):
            order = np.argsort(chain[:, 1], kind="stable")
            ys = np.linspace(y0, y1, 6)[:: -1 if flip else 1]
            band += view.project(np.column_stack([np.interp(ys, chain[order, 1], chain[order, 0]), ys]), side)
        photo.polygon(band, fill=color)

    face = view.end_band(car.clearance + 0.005, car.roof - 0.004)
    if face is not None:  # the front or the rear seen end on: a darker panel, glass, lights
        photo.polygon(face, fill=_shade(car.paint, 0.82))
        glass = view.end_band(car.belt + 0.015, car.roof - 0.015, inset=0.12)
        if glass:
            photo.polygon(glass, fill=car.glass)
        lights = view.end_points(np.array([car.belt - 0.045]))
        near, far = view.project(lights, view.near)[0], view.project(lights, view.far)[0]
        lamp = (236, 236, 226) if view.front_visible else (190, 30, 30)
        ry = 0.012 * scale
        for t in (0.17, 0.83):
            u = near[0] + t * (far[0] - near[0])
            photo.ellipse(_box((u, near[1]), 0.1 * abs(far[0] - near[0]), ry), fill=lamp)
        if view.front_visible:
            mid = ((near[0] + far[0]) / 2, near[1] + 0.04 * scale)
            photo.rounded_rectangle(_box(mid, 0.22 * abs(far[0] - near[0]), 0.018 * scale),
                                    radius=0.006 * scale, fill=(28, 28, 30))

    if view.sin > 0.2:  # the near side: windows, pillar, door seams, lamps, wheel arches
        photo.polygon(view.project(car.window, view.near), fill=car.glass)
        reflection = car.window.copy()
        reflection[[1, 2], 0] = reflection[[0, 3], 0] + np.array([0.08, -0.2]) * (reflection[3, 0] - reflection[0, 0])
        photo.polygon(view.project(reflection, view.near), fill=_shade(car.glass, 1.25, 18))
        pillar = np.array([[car.pillar_x - 0.012, car.belt], [car.pillar_x - 0.016, car.roof],
                           [car.pillar_x + 0.012, car.roof], [car.pillar_x + 0.016, car.belt]])
        photo.polygon(view.project(pillar, view.near), fill=car.paint)
        for x in car.door_x:
            photo.line(view.project(np.array([[x, car.clearance + 0.02], [x, car.belt - 0.005]]), view.near),
                       fill=_shade(car.paint, 0.6), width=line)
        head = view.project(np.array([[0.955, car.belt - 0.05]]), view.near)[0]
        tail = view.project(np.array([[0.03, car.belt - 0.04]]), view.near)[0]
        photo.ellipse(_box(head, 0.025 * scale * view.sin, 0.011 * scale), fill=(236, 236, 226))
        photo.ellipse(_box(tail, 0.02 * scale * view.sin, 0.012 * scale), fill=(176, 26, 28))
        for box in view.wheels(view.near):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            photo.pieslice(_box((cx, cy), 1.15 * (box[2] - cx), 1.15 * (box[3] - cy)), 180, 360,
                           fill=_shade(car.paint, 0.35))
    for box in view.wheels(view.near) if near_in_front else []:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        rx, ry = box[2] - cx, box[3] - cy
        photo.ellipse(box, fill=tyre)
        if view.sin > 0.35:
            photo.ellipse(_box((cx, cy), 0.62 * rx, 0.62 * ry), fill=rim)
            photo.ellipse(_box((cx, cy), 0.2 * rx, 0.2 * ry), fill=(60, 60, 64))


def _studio(car: Car, view: _View, size: tuple[int, int]) -> Image.Image:
    """The background at full size: wall and floor gradients, the floor line and the car's soft shadow."""
    width, height = size
    small_w, small_h = max(8, round(width / BACKGROUND_SCALE)), max(8, round(height / BACKGROUND_SCALE))
    y = ((np.arange(small_h) + 0.5) / small_h)[:, None, None]
    x = ((np.arange(small_w) + 0.5) / small_w)[None, :, None]
    wall_top, wall_bottom = (np.array(c, np.float32) for c in car.wall)
    floor_far, floor_near = (np.array(c, np.float32) for c in car.floor)
    t_wall = np.clip(y / car.floor_frac, 0, 1)
    t_floor = np.clip((y - car.floor_frac) / (1 - car.floor_frac), 0, 1)
    picture = np.where(y < car.floor_frac, wall_top + (wall_bottom - wall_top) * t_wall,
                       floor_far + (floor_near - floor_far) * t_floor)
    picture = picture * (1.0 - 0.12 * ((x - 0.5) * 2) ** 2)  # lights fall off towards the sides
    # The shadow: a blurred ellipse on the floor under the car, as wide as the car looks.
    shadow = Image.new("L", (small_w, small_h), 0)
    left = min(u for u, _ in view.silhouette())
    right = max(u for u, _ in view.silhouette())
    half = 0.55 * (right - left) / BACKGROUND_SCALE
    middle = (left + right) / 2 / BACKGROUND_SCALE
    ground = view.ground / BACKGROUND_SCALE
    ImageDraw.Draw(shadow).ellipse((middle - half, ground - 0.02 * view.scale / BACKGROUND_SCALE,
                                    middle + half, ground + 0.035 * view.scale / BACKGROUND_SCALE), fill=255)
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(0.6, 0.012 * view.scale / BACKGROUND_SCALE)))
    picture = picture * (1.0 - 0.6 / 255 * np.asarray(shadow, np.float32)[:, :, None])
    studio = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB").resize(size, Image.BILINEAR)
    floor_y = car.floor_frac * height
    ImageDraw.Draw(studio).line((0, floor_y, width, floor_y), fill=_shade(car.floor[0], 0.9),
                                width=max(1, round(height / 500)))
    return studio


def render(car: Car, angle_index: int, size: tuple[int, int],
            rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One photo (RGB) and its mask (mode "P", palette indices 0/1) of `car` at turntable step angle_index (0..15)."""
    view = _View(car, angle_index, size)
    mask = Image.new("L", size, 0)
    look = Image.new("RGB", size, car.paint)
    _draw_car(view, ImageDraw.Draw(look), ImageDraw.Draw(mask))
    # The car's pixels are exactly the mask's: no detail can spill outside it.
    photo = Image.composite(look, _studio(car, view, size), mask)
    noise = Image.frombytes("RGB", size, rng.bytes(size[0] * size[1] * 3)).point(_NOISE_TABLE * 3)
    photo = ImageChops.add(photo, noise, 1.0, -_NOISE_OFFSET)
    gif = Image.frombytes("P", size, mask.point([0] * 128 + [1] * 128).tobytes())
    gif.putpalette([0, 0, 0, 255, 255, 255])  # like Kaggle's: index 0 black, index 1 white
    return photo, gif


