"""Drawn Pedestrians: a text-based person retrieval benchmark drawn procedurally with Pillow.

The real benchmarks are licence-restricted, so the project ships a generator for a benchmark it can always make
itself. Every identity is a fixed combination of sixteen attributes (body build, hair length and colour, upper garment
type / colour / pattern / sleeve length, lower garment type and colour, shoe colour, bag type and colour, hat type and
colour, glasses, a carried object). Every image of an identity varies the viewpoint (front, back, side: some
attributes become invisible), pose, position and scale, background, lighting, resolution, blur, noise and partial
occlusion. Captions are written in the style of CUHK-PEDES from the attributes visible in that image only, with varied
templates, synonyms, order and omissions; each record also stores the phrases of its visible attributes.

Difficulty: `difficulty` in [0, 1] (default 0.25) is the knob to tune retrieval accuracy.
- It is the probability that a new identity is a near-duplicate: a copy of an earlier identity of the same split
  with only one or two attributes changed, so that coarse matching is not enough. Raising it is the strongest
  lever to lower R@1.
- It scales the image degradations: occlusion probability (0.6 x difficulty), blur radius (up to 1.4 x difficulty
  px), noise (up to 12 x difficulty grey levels), lighting (gain -15% .. +12% x difficulty; kept small so that
  colour words stay true) and down-sampling.
- Captions mention each optional attribute with probability 0.85 - 0.3 x difficulty (the upper and lower garments
  are always mentioned).

The output is the CUHK-PEDES raw layout (`reid_raw.json` + `imgs/`; each record also has `attributes`, `view`,
`torso_box`, `waist_box` and `occluded`) and is then built by the same builder as the real data.

Usage: `python -m dataset_scripts.generate OUTPUT_DIR [--num-train-ids 1000 ...]` (cached: rerunning with the same
sizes, seed and difficulty reuses OUTPUT_DIR).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import multiprocessing
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from modeling_ivt.cli import CommandParser, user_errors
from modeling_ivt.safe_io import atomic_output, write_text_atomic

from .build import build_benchmark, format_counts_table, split_counts


logger = logging.getLogger(__name__)

BENCHMARK_NAME = "Drawn Pedestrians"
DEFAULT_DIFFICULTY = 0.25  # calibrated on the main job (docs/training.md, "The main job")
GENERATOR_VERSION = 1
IMAGE_HEIGHT, IMAGE_WIDTH = 384, 128
GENERATION_INFO_FILE = "generation.json"

# Well separated colours, so that a colour word can be checked against pixels under the lighting changes.
PALETTE = {
    "black": (28, 28, 30),
    "white": (236, 236, 232),
    "grey": (128, 128, 128),
    "red": (200, 32, 36),
    "orange": (238, 128, 24),
    "yellow": (236, 212, 44),
    "green": (36, 148, 64),
    "blue": (40, 82, 204),
    "purple": (128, 52, 164),
    "pink": (240, 136, 184),
    "brown": (118, 74, 36),
}
HAIR_COLOURS = {"black": (22, 20, 20), "brown": (92, 56, 30), "blonde": (222, 190, 112), "grey": (170, 170, 168)}
SKIN_TONES = [(244, 206, 170), (224, 172, 130), (180, 124, 84), (122, 80, 52)]
SHOE_COLOURS = ["black", "white", "brown", "red", "blue", "grey"]

ATTRIBUTE_VALUES = {
    "build": ["slim", "average", "heavy"],
    "hair_length": ["short", "long"],
    "hair_colour": list(HAIR_COLOURS),
    "upper_type": ["t-shirt", "shirt", "jacket", "coat", "hoodie"],
    "upper_colour": list(PALETTE),
    "upper_pattern": ["plain", "striped", "checked", "logo"],
    "sleeves": ["short", "long"],
    "lower_type": ["trousers", "shorts", "skirt"],
    "lower_colour": list(PALETTE),
    "shoe_colour": SHOE_COLOURS,
    "bag": ["none", "backpack", "handbag", "shoulder bag"],
    "bag_colour": list(PALETTE),
    "hat": ["none", "cap", "beanie"],
    "hat_colour": list(PALETTE),
    "glasses": ["none", "glasses", "sunglasses"],
    "carried": ["none", "umbrella", "phone", "bottle"],
}
# Attributes a near-duplicate may change (the colour of an absent bag or hat would change nothing).
MUTABLE_ATTRIBUTES = [name for name in ATTRIBUTE_VALUES if name not in ("bag_colour", "hat_colour")]
UPPER_NOUNS = {
    "t-shirt": ["t-shirt", "tee", "t-shirt"],
    "shirt": ["shirt", "button-up shirt"],
    "jacket": ["jacket", "zip-up jacket"],
    "coat": ["coat", "long coat"],
    "hoodie": ["hoodie", "hooded sweatshirt"],
}
GENERIC_UPPER_NOUNS = ["top", "upper garment"]
LOWER_NOUNS = {"trousers": ["trousers", "pants", "slacks"], "shorts": ["shorts"], "skirt": ["skirt"]}


@dataclass(frozen=True)
class Identity:
    """A person: a fixed attribute combination and a skin tone (an index into SKIN_TONES)."""

    person_id: int
    skin: int
    attributes: tuple[tuple[str, str], ...]  # (name, value) pairs sorted by name


def _normalise(attributes: dict[str, str]) -> dict[str, str]:
    """Drop attribute values that cannot matter, so that equal-looking identities compare equal."""
    attributes = dict(attributes)
    if attributes["upper_type"] in ("jacket", "coat", "hoodie"):
        attributes["sleeves"] = "long"
    if attributes["bag"] == "none":
        attributes["bag_colour"] = "none"
    elif attributes["bag_colour"] == "none":
        attributes["bag_colour"] = "black"
    if attributes["hat"] == "none":
        attributes["hat_colour"] = "none"
    elif attributes["hat_colour"] == "none":
        attributes["hat_colour"] = "black"
    return attributes


def _random_attributes(rng: random.Random) -> dict[str, str]:
    attributes = {name: rng.choice(values) for name, values in ATTRIBUTE_VALUES.items()}
    # Real pedestrians mostly wear plain, dark-ish trousers and no hat; skew a few priors that way.
    attributes["upper_pattern"] = rng.choices(ATTRIBUTE_VALUES["upper_pattern"], weights=[4, 2, 1, 1])[0]
    attributes["hat"] = rng.choices(ATTRIBUTE_VALUES["hat"], weights=[3, 1, 1])[0]
    attributes["glasses"] = rng.choices(ATTRIBUTE_VALUES["glasses"], weights=[3, 1, 1])[0]
    attributes["carried"] = rng.choices(ATTRIBUTE_VALUES["carried"], weights=[4, 1, 1, 1])[0]
    return _normalise(attributes)


def draw_identities(count: int, first_id: int, rng: random.Random, difficulty: float) -> list[Identity]:
    """`count` identities with distinct attribute combinations; with probability `difficulty` each new one is a copy
    of an earlier one with one or two attributes changed."""
    identities: list[Identity] = []
    seen: set[tuple] = set()
    while len(identities) < count:
        if identities and rng.random() < difficulty:
            source = rng.choice(identities)
            attributes = dict(source.attributes)
            for name in rng.sample(MUTABLE_ATTRIBUTES, rng.choice([1, 1, 2])):
                attributes[name] = rng.choice([value for value in ATTRIBUTE_VALUES[name] if value != attributes[name]])
                if (
                    name in ("bag", "hat") and attributes[f"{name}_colour"] == "none"
                ):  # a bag or hat appears: colour it
                    attributes[f"{name}_colour"] = rng.choice(ATTRIBUTE_VALUES[f"{name}_colour"])
            attributes = _normalise(attributes)
            skin = source.skin
        else:
            attributes = _random_attributes(rng)
            skin = rng.randrange(len(SKIN_TONES))
        key = tuple(sorted(attributes.items()))
        if key in seen:
            continue
        seen.add(key)
        identities.append(Identity(first_id + len(identities), skin, key))
    return identities


def attribute_distance(first: Identity, second: Identity) -> int:
    """How many attributes two identities differ in."""
    return sum(a != b for (_, a), (_, b) in zip(first.attributes, second.attributes, strict=True))


# ----------------------------------------------------------------------------------------------------------------
# Drawing


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(round(channel * factor)))) for channel in colour)


def _contrast(colour_name: str) -> tuple[int, int, int]:
    """The pattern colour on a garment: white on dark or saturated colours, black on light ones."""
    return PALETTE["black"] if colour_name in ("white", "yellow", "pink", "orange") else PALETTE["white"]


def _background(rng: random.Random) -> Image.Image:
    top = tuple(rng.randint(60, 200) for _ in range(3))
    bottom = tuple(rng.randint(60, 200) for _ in range(3))
    ramp = np.linspace(0.0, 1.0, IMAGE_HEIGHT, dtype=np.float32)[:, None]
    column = ((1 - ramp) * np.array(top, dtype=np.float32) + ramp * np.array(bottom, dtype=np.float32)).astype(
        np.uint8
    )
    image = Image.fromarray(
        np.ascontiguousarray(np.broadcast_to(column[:, None], (IMAGE_HEIGHT, IMAGE_WIDTH, 3))), "RGB"
    )
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):  # walls, windows, street furniture in muted colours
        x0, y0 = rng.randint(-20, IMAGE_WIDTH), rng.randint(-20, IMAGE_HEIGHT)
        colour = tuple(rng.randint(70, 180) for _ in range(3))
        draw.rectangle([x0, y0, x0 + rng.randint(10, 80), y0 + rng.randint(10, 120)], fill=colour)
    ground = rng.randint(int(IMAGE_HEIGHT * 0.7), int(IMAGE_HEIGHT * 0.9))
    draw.rectangle([0, ground, IMAGE_WIDTH, IMAGE_HEIGHT], fill=tuple(rng.randint(80, 150) for _ in range(3)))
    return image


@dataclass
class RenderInfo:
    view: str
    torso_box: list[int]  # a box inside the upper garment (front view: free of straps and details)
    waist_box: list[int]  # a box inside the lower garment, just under the upper garment
    occluded: list[str]


def render_person(
    identity: Identity, view: str, rng: random.Random, difficulty: float
) -> tuple[Image.Image, RenderInfo]:
    """Draw one image of `identity` seen from `view` ("front", "back" or "side")."""
    a = dict(identity.attributes)
    image = _background(rng)
    layer = Image.new("RGBA", (IMAGE_WIDTH, IMAGE_HEIGHT), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)

    h = IMAGE_HEIGHT * rng.uniform(0.8, 0.94)
    top = (IMAGE_HEIGHT - h) / 2 + rng.uniform(-0.04, 0.04) * IMAGE_HEIGHT
    cx = IMAGE_WIDTH / 2 + rng.uniform(-9, 9)
    build = {"slim": 0.82, "average": 1.0, "heavy": 1.22}[a["build"]]
    side = view == "side"
    width = build * (0.6 if side else 1.0)

    def y(fraction: float) -> float:
        return top + fraction * h

    skin = SKIN_TONES[identity.skin]
    upper = PALETTE[a["upper_colour"]]
    lower = PALETTE[a["lower_colour"]]
    hair = HAIR_COLOURS[a["hair_colour"]]
    shoe = PALETTE[a["shoe_colour"]]
    shoulder_half = 0.125 * h * width
    hip_half = 0.1 * h * width
    hip_y, torso_bottom = y(0.49), y(0.64 if a["upper_type"] == "coat" else 0.5)
    head_cx, head_cy, head_r = cx + (0.02 * h if side else 0), y(0.075), 0.056 * h
    stride = rng.uniform(0.0, 0.05 if not side else 0.1) * h
    arm_w = 0.048 * h * build**0.5
    leg_w = 0.068 * h * build**0.5

    # Long hair and the hood hang behind the head and shoulders.
    if a["hair_length"] == "long" and view != "back":
        behind = head_cx - (0.03 * h if side else 0)
        draw.rounded_rectangle(
            [behind - head_r * 1.1, head_cy - head_r, behind + head_r * 1.1, y(0.2)], radius=head_r * 0.6, fill=hair
        )
    if a["upper_type"] == "hoodie" and view != "back":
        draw.ellipse([head_cx - head_r * 1.3, y(0.11), head_cx + head_r * 1.3, y(0.19)], fill=_shade(upper, 0.8))

    # Legs, then the lower garment over them.
    feet_y = y(0.985)
    if side:
        leg_xs = [(cx, cx - stride), (cx, cx + stride)]
    else:
        spread = 0.045 * h * build
        leg_xs = [(cx - spread, cx - spread - stride / 2), (cx + spread, cx + spread + stride / 2)]
    for hip_x, foot_x in leg_xs:
        draw.polygon(
            [
                (hip_x - leg_w / 2, hip_y),
                (hip_x + leg_w / 2, hip_y),
                (foot_x + leg_w / 2.6, y(0.93)),
                (foot_x - leg_w / 2.6, y(0.93)),
            ],
            fill=skin,
        )
    lower_end = {"trousers": 0.93, "shorts": 0.65, "skirt": 0.7}[a["lower_type"]]
    if a["lower_type"] == "skirt":
        flare = hip_half * 1.45
        draw.polygon(
            [(cx - hip_half, hip_y), (cx + hip_half, hip_y), (cx + flare, y(0.7)), (cx - flare, y(0.7))], fill=lower
        )
    else:
        for hip_x, foot_x in leg_xs:
            t = (lower_end - 0.49) / (0.93 - 0.49)
            end_x = hip_x + t * (foot_x - hip_x)
            half_end = leg_w / 2 * (1 - t) + leg_w / 2.6 * t + 1.5
            draw.polygon(
                [
                    (hip_x - leg_w / 2 - 1.5, hip_y),
                    (hip_x + leg_w / 2 + 1.5, hip_y),
                    (end_x + half_end, y(lower_end)),
                    (end_x - half_end, y(lower_end)),
                ],
                fill=lower,
            )
    draw.rectangle([cx - hip_half, hip_y - 2, cx + hip_half, y(0.56)], fill=lower)
    for _, foot_x in leg_xs:
        toe = 0.05 * h if side else 0.0
        draw.ellipse([foot_x - 0.045 * h, y(0.925), foot_x + 0.045 * h + toe, feet_y], fill=shoe)

    # Backpack body behind the torso (side view).
    bag_colour = PALETTE.get(a["bag_colour"], PALETTE["black"])
    if a["bag"] == "backpack" and side:
        draw.rounded_rectangle(
            [cx - shoulder_half - 0.09 * h, y(0.17), cx - shoulder_half + 4, y(0.42)], radius=6, fill=bag_colour
        )

    # Torso (upper garment) with its pattern and details.
    torso = [
        (cx - shoulder_half, y(0.15)),
        (cx + shoulder_half, y(0.15)),
        (cx + hip_half * 1.08, torso_bottom),
        (cx - hip_half * 1.08, torso_bottom),
    ]
    draw.polygon(torso, fill=upper)
    torso_left, torso_right = cx - hip_half, cx + hip_half
    pattern_colour = _contrast(a["upper_colour"])
    if a["upper_pattern"] == "striped":
        period = 0.045 * h
        stripe_y = y(0.19)
        while stripe_y < torso_bottom - 3:
            draw.rectangle([torso_left - 6, stripe_y, torso_right + 6, stripe_y + period * 0.3], fill=pattern_colour)
            stripe_y += period
    elif a["upper_pattern"] == "checked":
        step = 0.04 * h
        for offset in np.arange(y(0.18), torso_bottom - 2, step):
            draw.line([(torso_left - 4, offset), (torso_right + 4, offset)], fill=pattern_colour, width=2)
        for offset in np.arange(torso_left - 4, torso_right + 5, step):
            draw.line([(offset, y(0.16)), (offset, torso_bottom - 1)], fill=pattern_colour, width=2)
    elif a["upper_pattern"] == "logo" and view == "front":
        draw.rectangle([cx - 0.04 * h, y(0.21), cx + 0.04 * h, y(0.26)], fill=pattern_colour)
    dark = _shade(upper, 0.55) if a["upper_colour"] != "black" else (80, 80, 84)
    if view == "front":
        if a["upper_type"] in ("jacket", "coat"):
            draw.line([(cx, y(0.16)), (cx, torso_bottom)], fill=dark, width=2)
        if a["upper_type"] == "shirt":
            for button_y in np.arange(y(0.19), torso_bottom - 4, 0.05 * h):
                draw.ellipse([cx - 1.5, button_y - 1.5, cx + 1.5, button_y + 1.5], fill=dark)
        if a["upper_type"] in ("shirt", "jacket", "coat"):
            draw.polygon([(cx - 0.05 * h, y(0.145)), (cx, y(0.19)), (cx - 0.015 * h, y(0.145))], fill=dark)
            draw.polygon([(cx + 0.05 * h, y(0.145)), (cx, y(0.19)), (cx + 0.015 * h, y(0.145))], fill=dark)
        if a["upper_type"] == "hoodie":
            draw.rectangle([cx - 0.06 * h, y(0.4), cx + 0.06 * h, y(0.46)], outline=dark, width=2)
    if view == "back" and a["upper_type"] == "hoodie":
        draw.ellipse([cx - 0.07 * h, y(0.13), cx + 0.07 * h, y(0.24)], fill=dark)

    # Arms: sleeve in the garment colour, then skin, then the hand.
    swing = rng.uniform(-0.035, 0.035) * h
    arm_xs = [cx] if side else [cx - shoulder_half - arm_w / 2 + 2, cx + shoulder_half + arm_w / 2 - 2]
    hands = []
    for index, shoulder_x in enumerate(arm_xs):
        wrist_x = shoulder_x + (swing if index == 0 else -swing)
        sleeve_end = 0.47 if a["sleeves"] == "long" else 0.26
        draw.line([(shoulder_x, y(0.165)), (wrist_x, y(0.47))], fill=skin, width=int(arm_w))
        sleeve_x = shoulder_x + (wrist_x - shoulder_x) * (sleeve_end - 0.165) / (0.47 - 0.165)
        draw.line([(shoulder_x, y(0.165)), (sleeve_x, y(sleeve_end))], fill=upper, width=int(arm_w) + 2)
        draw.ellipse([shoulder_x - arm_w / 2, y(0.15), shoulder_x + arm_w / 2, y(0.15) + arm_w], fill=upper)
        draw.ellipse([wrist_x - 0.024 * h, y(0.465), wrist_x + 0.024 * h, y(0.505)], fill=skin)
        hands.append(wrist_x)

    # Bags and carried objects.
    if a["bag"] == "backpack" and view == "back":
        draw.rounded_rectangle(
            [cx - shoulder_half * 0.75, y(0.18), cx + shoulder_half * 0.75, y(0.43)], radius=8, fill=bag_colour
        )
        draw.rectangle(
            [cx - shoulder_half * 0.5, y(0.33), cx + shoulder_half * 0.5, y(0.4)],
            outline=_shade(bag_colour, 0.6),
            width=2,
        )
    if a["bag"] == "backpack" and view == "front":
        for strap_x in (cx - shoulder_half * 0.62, cx + shoulder_half * 0.62):
            draw.line([(strap_x, y(0.15)), (strap_x, y(0.36))], fill=bag_colour, width=max(3, int(0.015 * h)))
    if a["bag"] == "shoulder bag":
        bag_x = hands[-1] if not side else cx + 0.03 * h
        if not side:
            draw.line([(cx - shoulder_half * 0.8, y(0.155)), (bag_x, y(0.47))], fill=_shade(bag_colour, 0.8), width=3)
        draw.rounded_rectangle([bag_x - 0.05 * h, y(0.45), bag_x + 0.05 * h, y(0.54)], radius=4, fill=bag_colour)
    if a["bag"] == "handbag":
        bag_x = hands[0]
        draw.arc(
            [bag_x - 0.03 * h, y(0.47), bag_x + 0.03 * h, y(0.53)], 180, 360, fill=_shade(bag_colour, 0.7), width=3
        )
        draw.rounded_rectangle([bag_x - 0.045 * h, y(0.5), bag_x + 0.045 * h, y(0.58)], radius=3, fill=bag_colour)
    carry_x = hands[-1]
    if a["carried"] == "umbrella":
        draw.line([(carry_x, y(0.47)), (carry_x + 0.02 * h, y(0.88))], fill=(30, 30, 60), width=max(4, int(0.014 * h)))
        draw.polygon(
            [(carry_x - 5, y(0.52)), (carry_x + 7, y(0.52)), (carry_x + 0.02 * h, y(0.86))], fill=(30, 30, 60)
        )
    elif a["carried"] == "phone" and view != "back":
        draw.rectangle([carry_x - 0.014 * h, y(0.45), carry_x + 0.014 * h, y(0.49)], fill=(20, 20, 24))
    elif a["carried"] == "bottle":
        draw.rounded_rectangle(
            [carry_x - 0.016 * h, y(0.46), carry_x + 0.016 * h, y(0.53)], radius=3, fill=(150, 200, 235)
        )

    # Neck and head; hair, hat and glasses as the view allows.
    draw.rectangle([cx - 0.02 * h, y(0.12), cx + 0.02 * h, y(0.16)], fill=skin)
    head = [head_cx - head_r, head_cy - head_r * 1.15, head_cx + head_r, head_cy + head_r * 1.15]
    draw.ellipse(head, fill=skin)
    if view == "back":
        draw.ellipse(head, fill=hair)
        if a["hair_length"] == "long":
            draw.rounded_rectangle(
                [head_cx - head_r * 1.05, head_cy, head_cx + head_r * 1.05, y(0.23)], radius=head_r * 0.5, fill=hair
            )
    elif side:
        draw.chord(head, 90, 300, fill=hair)
        draw.ellipse([head_cx + head_r * 0.35, head_cy - 2, head_cx + head_r * 0.55, head_cy + 2], fill=(30, 20, 20))
    else:
        draw.chord(head, 192, 348, fill=hair)
        for eye_x in (head_cx - head_r * 0.38, head_cx + head_r * 0.38):
            draw.ellipse([eye_x - 2, head_cy + 1, eye_x + 2, head_cy + 5], fill=(30, 20, 20))
    if a["glasses"] != "none" and view != "back":
        lens = (18, 18, 22) if a["glasses"] == "sunglasses" else None
        eye_xs = [head_cx + head_r * 0.45] if side else [head_cx - head_r * 0.38, head_cx + head_r * 0.38]
        for eye_x in eye_xs:
            draw.rectangle(
                [eye_x - 0.017 * h, head_cy - 1, eye_x + 0.017 * h, head_cy + 6],
                fill=lens,
                outline=(18, 18, 22),
                width=2,
            )
        if not side:
            draw.line(
                [(eye_xs[0] + 0.017 * h, head_cy + 2), (eye_xs[1] - 0.017 * h, head_cy + 2)],
                fill=(18, 18, 22),
                width=2,
            )
    hat = PALETTE.get(a["hat_colour"], PALETTE["black"])
    if a["hat"] == "cap":
        draw.chord(
            [head_cx - head_r * 1.05, head_cy - head_r * 1.3, head_cx + head_r * 1.05, head_cy + head_r * 0.5],
            180,
            360,
            fill=hat,
        )
        if view == "front":
            draw.rectangle(
                [head_cx - head_r * 0.9, head_cy - head_r * 0.45, head_cx + head_r * 0.9, head_cy - head_r * 0.3],
                fill=_shade(hat, 0.7),
            )
        elif side:
            draw.rectangle(
                [head_cx, head_cy - head_r * 0.45, head_cx + head_r * 1.7, head_cy - head_r * 0.3],
                fill=_shade(hat, 0.7),
            )
    elif a["hat"] == "beanie":
        draw.chord(
            [head_cx - head_r * 1.08, head_cy - head_r * 1.35, head_cx + head_r * 1.08, head_cy + head_r * 0.3],
            180,
            360,
            fill=hat,
        )
        draw.rectangle(
            [head_cx - head_r * 1.08, head_cy - head_r * 0.55, head_cx + head_r * 1.08, head_cy - head_r * 0.3],
            fill=_shade(hat, 0.8),
        )

    torso_box = [int(cx - hip_half * 0.5), int(y(0.27)), int(cx + hip_half * 0.5), int(y(0.45))]
    waist_box = [
        int(cx - hip_half * 0.5),
        int(y(0.505) if a["upper_type"] != "coat" else y(0.655)),
        int(cx + hip_half * 0.5),
        int(y(0.53) if a["upper_type"] != "coat" else y(0.68)),
    ]
    if side or view == "back" or a["upper_type"] == "coat":
        waist_box = []
    if view == "side" and rng.random() < 0.5:  # face left instead of right
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        torso_box = [IMAGE_WIDTH - torso_box[2], torso_box[1], IMAGE_WIDTH - torso_box[0], torso_box[3]]
    image.paste(layer, (0, 0), layer)

    occluded = []
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.6 * difficulty:
        colour = tuple(rng.randint(40, 200) for _ in range(3))
        if rng.random() < 0.5:  # a car, bench or railing in front of the feet
            occluder_top = int(y(rng.uniform(0.84, 0.9)))
            draw.rectangle([rng.randint(-40, 20), occluder_top, rng.randint(90, 170), IMAGE_HEIGHT], fill=colour)
            occluded.append("shoes")
        else:  # a pole or a passer-by at one edge
            strip = rng.randint(10, 28)
            x0 = 0 if rng.random() < 0.5 else IMAGE_WIDTH - strip
            draw.rectangle([x0, 0, x0 + strip, IMAGE_HEIGHT], fill=colour)
    return _degrade(image, rng, difficulty), RenderInfo(view, torso_box, waist_box, occluded)


@functools.cache
def _noise_bank() -> np.ndarray:
    """Unit Gaussian sensor noise, twice the image size: each image adds a crop at a random offset (cheap)."""
    return np.random.default_rng(0).standard_normal((2 * IMAGE_HEIGHT, 2 * IMAGE_WIDTH, 3), dtype=np.float32)


def _degrade(image: Image.Image, rng: random.Random, difficulty: float) -> Image.Image:
    """Camera effects: low resolution, lighting with a colour cast, blur and sensor noise."""
    if rng.random() < difficulty:
        factor = rng.uniform(1.3, 1.0 + 1.5 * difficulty)
        small = image.resize((int(IMAGE_WIDTH / factor), int(IMAGE_HEIGHT / factor)), Image.Resampling.BILINEAR)
        image = small.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    blur = rng.uniform(0.0, 1.4 * difficulty)
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float32)
    pixels *= rng.uniform(1 - 0.15 * difficulty, 1 + 0.12 * difficulty)
    pixels += np.array([rng.uniform(-6, 6) for _ in range(3)], dtype=np.float32)
    top, left = rng.randrange(IMAGE_HEIGHT), rng.randrange(IMAGE_WIDTH)
    pixels += _noise_bank()[top : top + IMAGE_HEIGHT, left : left + IMAGE_WIDTH] * rng.uniform(
        1.0, 1.0 + 11.0 * difficulty
    )
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------------------------------------------
# Captions


def visible_attributes(identity: Identity, info: RenderInfo) -> dict[str, str]:
    """The attributes a viewer can read off this image."""
    a = dict(identity.attributes)
    visible = {name: value for name, value in a.items() if value != "none"}
    if info.view == "back":
        visible.pop("glasses", None)
        if a["carried"] == "phone":
            visible.pop("carried", None)
        if a["upper_pattern"] == "logo":
            visible["upper_pattern"] = "plain"
        if a["upper_type"] in ("t-shirt", "shirt", "jacket"):
            visible["upper_type"] = "top"
    if info.view == "side" and a["upper_pattern"] == "logo":
        visible["upper_pattern"] = "plain"
    if a["hat"] == "beanie" and a["hair_length"] == "short" and info.view != "back":
        visible.pop("hair_colour", None)
    if "shoes" in info.occluded:
        visible.pop("shoe_colour", None)
    for item in ("bag", "hat"):
        if item not in visible:
            visible.pop(f"{item}_colour", None)
    return visible


def attribute_phrases(visible: dict[str, str]) -> list[str]:
    """Canonical short phrases of the visible attributes (stored per record; MLA's word level)."""
    phrases = []
    if "hair_colour" in visible:
        phrases.append(f"{visible['hair_length']} {visible['hair_colour']} hair")
    phrases.append(f"{visible['upper_colour']} {visible['upper_type']}")
    if visible["upper_type"] in ("t-shirt", "shirt"):
        phrases.append(f"{visible['sleeves']} sleeves")
    if visible["upper_pattern"] != "plain":
        phrases.append(
            {"striped": "stripes", "checked": "checked pattern", "logo": "logo on the front"}[visible["upper_pattern"]]
        )
    phrases.append(f"{visible['lower_colour']} {visible['lower_type']}")
    if "shoe_colour" in visible:
        phrases.append(f"{visible['shoe_colour']} shoes")
    if "bag" in visible:
        phrases.append(f"{visible['bag_colour']} {visible['bag']}")
    if "hat" in visible:
        phrases.append(f"{visible['hat_colour']} {visible['hat']}")
    if "glasses" in visible:
        phrases.append(visible["glasses"])
    if "carried" in visible:
        phrases.append(visible["carried"])
    phrases.append(f"{visible['build']} build")
    return phrases


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


MIN_CAPTION_WORDS = 15


def write_caption(visible: dict[str, str], rng: random.Random, mention_probability: float) -> str:
    """One CUHK-PEDES-style caption (1-3 sentences) naming only visible attributes, with varied wording and order.

    A draft shorter than MIN_CAPTION_WORDS is rewritten with a higher mention probability (real captions are 15-45
    words), as long as the image has more to say.
    """
    for _ in range(3):
        caption = _compose_caption(visible, rng, mention_probability)
        if len(caption.split()) >= MIN_CAPTION_WORDS:
            break
        mention_probability = (1.0 + mention_probability) / 2
    return caption


def _compose_caption(visible: dict[str, str], rng: random.Random, mention_probability: float) -> str:
    v = visible

    def mention(name: str) -> bool:
        return name in v and rng.random() < mention_probability

    # Upper garment: the colour word always comes right before the noun or its modifiers.
    noun = rng.choice(GENERIC_UPPER_NOUNS if v["upper_type"] == "top" else UPPER_NOUNS[v["upper_type"]])
    modifiers, trailer = [], ""
    pattern = v["upper_pattern"]
    if pattern == "striped":
        if rng.random() < 0.5:
            modifiers.append("striped")
        else:
            trailer = " with horizontal stripes"
    elif pattern == "checked":
        if rng.random() < 0.5:
            modifiers.append(rng.choice(["checked", "plaid"]))
        else:
            trailer = " with a checked pattern"
    elif pattern == "logo":
        trailer = rng.choice([" with a logo on the front", " with a small logo on the chest"])
    if v["upper_type"] in ("t-shirt", "shirt") and rng.random() < 0.8:
        modifiers.append(f"{v['sleeves']}-sleeved")
    upper = _article(" ".join([v["upper_colour"], *modifiers, noun])) + trailer
    lower_noun = rng.choice(LOWER_NOUNS[v["lower_type"]])
    lower = (_article if v["lower_type"] == "skirt" else lambda phrase: phrase)(f"{v['lower_colour']} {lower_noun}")
    if v["lower_type"] == "skirt" and rng.random() < 0.5:
        lower = _article(f"{v['lower_colour']} {rng.choice(['knee-length', 'short'])} skirt")

    worn = [upper, lower]
    if mention("shoe_colour"):
        worn.append(f"{v['shoe_colour']} {rng.choice(['shoes', 'sneakers', 'shoes'])}")
    if mention("hat"):
        hat_noun = rng.choice(["cap", "baseball cap"]) if v["hat"] == "cap" else rng.choice(["beanie", "knit hat"])
        worn.append(_article(f"{v['hat_colour']} {hat_noun}"))
    if mention("glasses"):
        worn.append(
            rng.choice(["glasses", "eyeglasses"])
            if v["glasses"] == "glasses"
            else rng.choice(["sunglasses", "dark sunglasses"])
        )
    if len(worn) > 2 and rng.random() < 0.5:
        rest = worn[1:]
        rng.shuffle(rest)
        worn = worn[:1] + rest

    carried = []
    if mention("bag"):
        bag_noun = {
            "backpack": "backpack",
            "handbag": rng.choice(["handbag", "purse"]),
            "shoulder bag": rng.choice(["shoulder bag", "bag over the shoulder"]),
        }[v["bag"]]
        carried.append(_article(f"{v['bag_colour']} {bag_noun}"))
    if mention("carried"):
        carried.append(
            {
                "umbrella": rng.choice(["an umbrella", "a closed umbrella"]),
                "phone": rng.choice(["a phone", "a mobile phone"]),
                "bottle": rng.choice(["a bottle", "a water bottle"]),
            }[v["carried"]]
        )
    hair = None
    if mention("hair_colour"):
        hair = rng.choice(
            [f"{v['hair_length']} {v['hair_colour']} hair", f"{v['hair_colour']} hair", f"{v['hair_length']} hair"]
        )

    build = ""
    if rng.random() < mention_probability * 0.6:
        build = {"slim": rng.choice(["slim ", "thin "]), "average": "", "heavy": rng.choice(["heavyset ", "stocky "])}[
            v["build"]
        ]
    subject = rng.choice(
        [
            f"A {build}person",
            f"The {build}pedestrian",
            f"This {build}person",
            f"A {build}pedestrian",
            f"The {build}individual",
        ]
    )
    pronoun = rng.choice(["The person", "This pedestrian", "The individual", "They"])
    verb_s = pronoun != "They"

    def join(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    wear = rng.choice(["is wearing", "wears", "is dressed in"])
    sentences = []
    if hair and rng.random() < 0.4:
        sentences.append(f"{subject} with {hair} {wear} {join(worn)}.")
        hair = None
    else:
        sentences.append(f"{subject} {wear} {join(worn)}.")
    tail = []
    if carried:
        carry = rng.choice(["carries", "is carrying", "has"] if verb_s else ["carry", "are carrying", "have"])
        tail.append(f"{carry} {join(carried)}")
    if hair:
        tail.append(f"{'has' if verb_s else 'have'} {hair}")
    rng.shuffle(tail)
    if tail:
        sentences.append(f"{pronoun} {' and '.join(tail)}.")
    return " ".join(sentences)


# ----------------------------------------------------------------------------------------------------------------
# Raw layout


@dataclass(frozen=True)
class _ImageJob:
    split: str
    identity: Identity
    index: int
    seed: int
    difficulty: float
    captions_per_image: int
    imgs_dir: str


def _render_job(job: _ImageJob) -> dict:
    rng = random.Random(job.seed)
    view = rng.choices(["front", "back", "side"], weights=[0.45, 0.3, 0.25])[0]
    image, info = render_person(job.identity, view, rng, job.difficulty)
    visible = visible_attributes(job.identity, info)
    mention_probability = 0.85 - 0.3 * job.difficulty
    captions = [write_caption(visible, rng, mention_probability) for _ in range(job.captions_per_image)]
    pid = job.identity.person_id
    file_path = f"{job.split}/{pid:05d}/{pid:05d}_{job.index}.jpg"
    target = Path(job.imgs_dir) / file_path
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    target.write_bytes(buffer.getvalue())
    return {
        "split": job.split,
        "captions": captions,
        "file_path": file_path,
        "processed_tokens": [caption.lower().replace(".", " .").replace(",", " ,").split() for caption in captions],
        "id": pid,
        "attributes": attribute_phrases(visible),
        **asdict(info),
    }


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that decides what the generator draws: the same settings always give the same benchmark."""

    num_train_ids: int = field(default=1000, metadata={"help": "training identities"})
    num_val_ids: int = field(default=100, metadata={"help": "validation identities"})
    num_test_ids: int = field(default=200, metadata={"help": "test identities"})
    images_per_id: int = field(default=4, metadata={"help": "images per identity"})
    captions_per_image: int = field(default=2, metadata={"help": "captions per image"})
    seed: int = field(default=0, metadata={"help": "generator seed"})
    difficulty: float = field(
        default=DEFAULT_DIFFICULTY,
        metadata={"help": "0 (easy) .. 1 (hard): look-alike share and image degradations (see the module docstring)"},
    )

    def __post_init__(self):
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        for name in ("num_train_ids", "num_val_ids", "num_test_ids", "images_per_id", "captions_per_image"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name in ("num_val_ids", "num_test_ids") else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


def generate_raw(
    raw_root: str | os.PathLike, settings: GeneratorSettings = GeneratorSettings(), num_workers: int = 2
) -> Path:
    """Write the benchmark in the CUHK-PEDES raw layout under `raw_root` and return the annotation file's path.

    Person ids start at 1 and run on across train, val and test. Deterministic for given settings, whatever
    `num_workers`.
    """
    raw_root = Path(raw_root)
    imgs_dir = raw_root / "imgs"
    imgs_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    jobs, next_id = [], 1
    splits = (("train", settings.num_train_ids), ("val", settings.num_val_ids), ("test", settings.num_test_ids))
    for split, count in splits:
        for identity in draw_identities(count, next_id, rng, settings.difficulty):
            for index in range(settings.images_per_id):
                jobs.append(
                    _ImageJob(
                        split,
                        identity,
                        index,
                        rng.getrandbits(63),
                        settings.difficulty,
                        settings.captions_per_image,
                        str(imgs_dir),
                    )
                )
        next_id += count
    progress = dict(total=len(jobs), desc=f"Drawing {BENCHMARK_NAME}", unit="img", mininterval=1.0)
    if num_workers > 1 and len(jobs) >= 64:
        with multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(num_workers) as pool:
            records = list(tqdm(pool.imap(_render_job, jobs, chunksize=32), **progress))
    else:
        records = [_render_job(job) for job in tqdm(jobs, **progress)]
    annotation_file = raw_root / "reid_raw.json"
    write_text_atomic(annotation_file, json.dumps(records, ensure_ascii=False))
    return annotation_file


def generated_dataset_card(settings: dict, counts: dict[str, dict[str, int]]) -> str:
    """README.md of the generated benchmark."""
    arguments = ", ".join(f"{name}={value!r}" for name, value in settings.items() if name != "generator_version")
    return f"""---
pretty_name: {BENCHMARK_NAME}
license: apache-2.0
task_categories:
- text-to-image
- image-to-text
tags:
- text-based-person-retrieval
- synthetic
- procedurally-generated
---

# {BENCHMARK_NAME}

A text-based person retrieval benchmark drawn procedurally with Pillow by the IVT-HF project
(`dataset_scripts/generate.py`, generator version {settings["generator_version"]}). Not related to PLIP's
SYNTH-PEDES: no real person appears in it. Each identity is a fixed combination of sixteen attributes; each image
varies viewpoint, pose, position, scale, background, lighting, blur, noise and occlusion; captions are written from
the attributes visible in that image. Many identities differ from another one in only one or two attributes.

Columns: `image` (384 x 128 RGB JPEG), `image_path`, `person_id`, `captions`, `attributes` (phrases of the
attributes visible in the image).

## Counts

{format_counts_table(counts)}

## Provenance

`ensure_generated_benchmark(OUTPUT_DIR, {arguments})`: raw files in the CUHK-PEDES layout, built with
`build_benchmark("cuhk-pedes", ...)`. Regenerate it any time; the same settings give the same data.

## Licence

Apache-2.0, like the code that draws it.

## Citation

Cite the IVT-HF project and, for the task, IVT: Shu et al., "See Finer, See More: Implicit Modality Alignment for
Text-based Person Retrieval", ECCV Workshops 2022.
"""


def ensure_generated_benchmark(
    output_dir: str | os.PathLike, settings: GeneratorSettings = GeneratorSettings(), num_workers: int = 2
) -> datasets.DatasetDict:
    """The generated benchmark at `output_dir`, generated and built first unless it is there with these settings.

    The settings are recorded in `output_dir/generation.json`; different settings regenerate (the old copy is
    replaced only once the new one is complete). A file lock makes concurrent callers wait for one build.
    """
    output_dir = Path(output_dir)
    recorded = {**asdict(settings), "generator_version": GENERATOR_VERSION}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(output_dir.parent / f".{output_dir.name}.lock")):
        info_file = output_dir / GENERATION_INFO_FILE
        if info_file.is_file() and json.loads(info_file.read_text(encoding="utf-8")) == recorded:
            logger.info("Reusing %s at %s", BENCHMARK_NAME, output_dir)
            return datasets.load_from_disk(str(output_dir))
        logger.info("Generating %s at %s with %s", BENCHMARK_NAME, output_dir, settings)
        with (
            tempfile.TemporaryDirectory(prefix=".drawn-pedestrians-raw-", dir=output_dir.parent) as raw_root,
            atomic_output(output_dir, directory=True) as staged,
        ):
            generate_raw(Path(raw_root), settings, num_workers=num_workers)
            built = build_benchmark("cuhk-pedes", raw_root, staged, overwrite=True)
            card = generated_dataset_card(recorded, split_counts(built))
            del built
            (staged / "README.md").write_text(card, encoding="utf-8")
            (staged / GENERATION_INFO_FILE).write_text(json.dumps(recorded, indent=2), encoding="utf-8")
    return datasets.load_from_disk(str(output_dir))


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m dataset_scripts.generate", description=f"Generate and build {BENCHMARK_NAME} (cached)."
    )
    parser.add_argument("output_dir", help="folder of the built benchmark")
    for setting in dataclasses.fields(GeneratorSettings):
        flag = "--" + setting.name.replace("_", "-")
        parser.add_argument(flag, type=type(setting.default), default=setting.default, help=setting.metadata["help"])
    parser.add_argument("--num-workers", type=int, default=2, help="drawing processes")
    args = parser.parse_args(argv)
    settings = GeneratorSettings(**{setting.name: getattr(args, setting.name) for setting in dataclasses.fields(GeneratorSettings)})
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        dataset_dict = ensure_generated_benchmark(args.output_dir, settings, num_workers=args.num_workers)
    print(f"{BENCHMARK_NAME} at {args.output_dir}")
    print(format_counts_table(split_counts(dataset_dict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
