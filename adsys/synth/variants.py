"""Pseudo-pathology variants of a subject, by generator name, each with a replay record:
the offline generators the shard builder (:mod:`adsys.shards.build`) draws variants with.

A spec names a generator (``generator: fluid``) and its options; :data:`GENERATORS` maps
the name to functions that generate one variant from a seed and replay it from its record.
Variant ``k`` of a subject is drawn with the seed :func:`adsys.seeding.derive_seed` derives
from (domain ``variant``: spec seed, subject id, k, attempt): stable across runs and
independent of scheduling order, so a resumed build writes the same bytes. A generator may
decline a seed (an empty lesion); the next attempt's seed is tried, and the seed that worked
is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adsys.errors import AdsysError
from adsys.seeding import derive_seed

MAX_ATTEMPTS = 16
LesionFormat = Literal["binary", "soft"]  # lesion maps as binary masks or soft P_T maps


class GeneratorError(AdsysError):
    """A generator could not make a variant for a subject (e.g. empty lesions every try)."""


@dataclass
class Variant:
    """One variant, arrays (x, y, z): pathological ``image`` float32, binary ``lesion``
    uint8, ``soft`` float32 lesion map, and the JSON ``params`` that replay it."""

    image: np.ndarray
    lesion: np.ndarray
    soft: np.ndarray
    params: dict[str, Any]


@dataclass(frozen=True)
class Generator:
    """A pseudo-pathology generator as the shard builder uses it.

    ``check(options)`` validates options early (raises ``ValueError``);
    ``generate(image, mask, seed, options, wm)`` returns a :class:`Variant` or ``None``
    (declined seed); ``replay(image, mask, params, options, wm)`` rebuilds it exactly.
    """

    name: str
    check: Callable[[dict[str, Any]], None]
    generate: Callable[..., Variant | None]
    replay: Callable[..., Variant | None]


def _fluid_args(options: dict[str, Any]) -> tuple[Any, list[Path] | None]:
    """(FluidConfig, lesion map files) from spec options; ``lesion_maps`` is a folder."""
    from adsys.synth.fluid import FluidConfig

    opts = dict(options)
    folder = opts.pop("lesion_maps", None)
    maps = sorted(Path(folder).glob("*.nii*")) if folder else None
    if folder and not maps:
        raise ValueError(f"fluid option lesion_maps: no NIfTI file in {folder}")
    return FluidConfig(**opts), maps


def _fluid_check(options: dict[str, Any]) -> None:
    _fluid_args(options)


def _fluid_variant(sample: Any) -> Variant | None:
    if sample is None:
        return None
    return Variant(sample.image, sample.lesion, sample.p_t, sample.params)


def _fluid_generate(image, mask, seed, options, wm) -> Variant | None:
    from adsys.synth import fluid

    config, maps = _fluid_args(options)
    return _fluid_variant(
        fluid.generate(image, mask, seed=seed, config=config, lesion_maps=maps, wm=wm)
    )


def _fluid_replay(image, mask, params, options, wm) -> Variant | None:
    from adsys.synth import fluid

    _, maps = _fluid_args(options)
    return _fluid_variant(fluid.replay(image, mask, params, wm=wm, lesion_maps=maps))


GENERATORS: dict[str, Generator] = {
    "fluid": Generator("fluid", _fluid_check, _fluid_generate, _fluid_replay),
}


def get_generator(name: str) -> Generator:
    """The registered generator ``name``; ``ValueError`` listing the known ones otherwise."""
    try:
        return GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}; known: {sorted(GENERATORS)}") from None


def make_variants(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    generator: str,
    count: int,
    options: dict[str, Any],
    seed: int,
    subject_id: str,
    wm: np.ndarray | None = None,
    lesion_format: LesionFormat = "binary",
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``count`` variants of ``image`` (x, y, z) float32 with brain ``mask``.

    Returns ``(variants, lesions, records)``: variants float32 (K, x, y, z); lesions uint8
    binary or float32 soft (K, x, y, z) per ``lesion_format``; one JSON record per variant
    (generator, options, seed, attempt, the generator's params) for :func:`replay_variant`.
    """
    gen = get_generator(generator)
    images, lesions, records = [], [], []
    for k in range(count):
        for attempt in range(MAX_ATTEMPTS):
            s = derive_seed("variant", seed, subject_id, k, attempt)
            variant = gen.generate(image, mask, s, options, wm)
            if variant is not None:
                break
        else:
            raise GeneratorError(
                f"subject {subject_id}: generator {generator!r} declined {MAX_ATTEMPTS} seeds "
                f"for variant {k} (empty lesions); check the brain mask or the options"
            )
        images.append(variant.image)
        lesions.append(variant.lesion if lesion_format == "binary" else variant.soft)
        records.append(
            {
                "index": k,
                "generator": generator,
                "options": options,
                "seed": s,
                "attempt": attempt,
                "uses_wm": wm is not None,
                "params": variant.params,
            }
        )
    shape = (0, *image.shape)
    lesion_dtype = np.uint8 if lesion_format == "binary" else np.float32
    return (
        np.stack(images) if images else np.zeros(shape, np.float32),
        np.stack(lesions) if lesions else np.zeros(shape, lesion_dtype),
        records,
    )


def replay_variant(
    record: dict[str, Any], image: np.ndarray, mask: np.ndarray, wm: np.ndarray | None = None
) -> Variant:
    """Rebuild a variant from its record (``meta["variants"][k]``) on the same inputs it was
    generated from: the sample's image as float32, its mask, and (when the record says
    ``uses_wm``) the subject's preprocessed white-matter map."""
    if record["uses_wm"] and wm is None:
        raise ValueError(f"variant {record['index']} was generated with a WM map: pass `wm`")
    gen = get_generator(record["generator"])
    variant = gen.replay(image, mask, record["params"], record["options"], wm)
    if variant is None:
        raise GeneratorError(f"variant {record['index']}: replay declined its recorded seed")
    return variant
