"""The identity of one driver image: what its build depends on (pure, no resources)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageKey:
    """The five build inputs of a driver image. Targets with equal keys share one image; the image tag
    (components/specs.image_tag) and the Dockerfile build arguments (components/driver_image.py) are both
    made from these fields by name, so no two places can disagree on their order."""

    driver_version: str
    gl_version: str
    arch: str
    flavour: str
    module_type: str
