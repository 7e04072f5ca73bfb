"""Each chapter's headless experiment, run by ``vitedu reproduce CHAPTER`` and by the chapter itself."""

from __future__ import annotations

from types import ModuleType

from . import (
    codes_study,
    deit3_revenge,
    dino,
    gbda_study,
    levit_study,
    patchconvnet_study,
    resmlp_study,
    resnet_strikes_back,
    scenes_calibration,
    three_things,
    vit_in_minutes,
    watermark_study,
)

EXPERIMENTS: dict[str, ModuleType] = {
    "00_vit_in_minutes": vit_in_minutes,
    "01_resnet_strikes_back": resnet_strikes_back,
    "02_deit3": deit3_revenge,
    "03_resmlp": resmlp_study,
    "04_levit": levit_study,
    "05_patchconvnet": patchconvnet_study,
    "06_three_things": three_things,
    "07_dino": dino,
    "08_watermarking": watermark_study,
    "09_compact_codes": codes_study,
    "10_gbda": gbda_study,
    "data_scenes": scenes_calibration,
}


def get(chapter: str) -> tuple[str, ModuleType]:
    """Look up by full name or by number prefix (``00``)."""
    matches = [name for name in EXPERIMENTS if name == chapter or name.split("_")[0] == chapter]
    if len(matches) != 1:
        raise KeyError(f"unknown chapter {chapter!r}: choose one of {', '.join(EXPERIMENTS)}.")
    return matches[0], EXPERIMENTS[matches[0]]
