"""Fully connected CRF (Krähenbühl & Koltun 2011) over class probabilities, through pydensecrf2.

Two kernels: a smoothness kernel (spatial std ``pos_xy_std``, weight ``pos_w``) and an appearance kernel
(spatial std ``bi_xy_std``, colour std ``bi_rgb_std``, weight ``bi_w``), ``iterations`` mean-field steps.

Presets (the values the named works published; ``seg.crf`` / ``seg.pseudo_crf`` can override each one):

- ``deeplab``: DeepLab-v2 ResNet-101 on VOC (10 iterations, pos 1/3, bi 67/3/4). The default at
  inference: it was cross-validated by DeepLab's authors for exactly what we refine there, a DeepLab's
  softmax, and the segmentation numbers of WSSS papers (L2G's included) come from DeepLab-v2 evaluations.
- ``deeplab_largefov``: DeepLab-v1 LargeFOV VGG-16 (pos 3/3, bi 121/5/4).
- ``psa``: PSA/SEAM's refinement of attention maps (pos 3/3, bi 80/13/10): a much stronger appearance
  term, meant for blurry CAM probabilities rather than a trained segmenter's confident ones.
- ``irn``: IRN's refinement of hard labels (pos 3/3, bi 50/5/10, label probability 0.7). The default
  for refining pseudo masks before training, which are hard labels, not probabilities.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from l2g.config import CrfConfig
from l2g.data.palette import IGNORE_INDEX
from l2g.segmentation.registry import PRESETS, CrfParams


def crf_params(config: CrfConfig) -> CrfParams:
    """The preset named by ``config.preset`` with every value that ``config`` sets replacing the preset's."""
    preset = PRESETS[config.preset]
    values = {f.name: getattr(config, f.name) for f in fields(CrfParams)}
    return CrfParams(**{name: getattr(preset, name) if value is None else value for name, value in values.items()})


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as error:
        raise ImportError("dense CRF needs pydensecrf2: pip install 'l2g[crf]' (or pydensecrf2)") from error
    return dcrf


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CrfParams) -> np.ndarray:
    """Refine (K, H, W) class probabilities with the (H, W, 3) uint8 RGB image; returns (K, H, W) float32.

    The unary is -log(p) (p clipped at 1e-8), so a pixel whose probabilities are certain stays put and
    uncertain pixels follow their similar-looking neighbours.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or image.shape[:2] != probs.shape[1:] or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"dense_crf: image {image.shape} and probabilities {probs.shape} do not match")
    classes, height, width = probs.shape
    if classes < 2:
        return probs.copy()
    dcrf = _densecrf()
    crf = dcrf.DenseCRF2D(width, height, classes)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(classes, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.pos_xy_std, compat=params.pos_w)
    crf.addPairwiseBilateral(sxy=params.bi_xy_std, srgb=params.bi_rgb_std,
                             rgbim=np.require(image, np.uint8, ["C", "W"]), compat=params.bi_w)  # needs writable
    return np.asarray(crf.inference(params.iterations), dtype=np.float32).reshape(classes, height, width)


def refine_labels(image: np.ndarray, mask: np.ndarray, params: CrfParams, gt_prob: float = 0.7) -> np.ndarray:
    """A hard label mask refined by the CRF; returns (H, W) uint8.

    Each labelled pixel gets probability ``gt_prob`` for its label and the rest shared evenly among the
    other labels present (background always counts as present); ignored pixels (255) get a uniform
    distribution and stay ignored in the output: the CRF may not invent labels where the mask had none.
    Only the labels present compete, so a refined mask never holds a class its image was not given.
    """
    mask = np.asarray(mask)
    labels = np.union1d([0], np.unique(mask[mask != IGNORE_INDEX])).astype(np.int64)
    if len(labels) < 2:
        return mask.astype(np.uint8, copy=True)
    index = np.searchsorted(labels, np.where(mask == IGNORE_INDEX, 0, mask))
    probs = np.full((len(labels), *mask.shape), (1 - gt_prob) / (len(labels) - 1), dtype=np.float32)
    np.put_along_axis(probs, index[None], gt_prob, axis=0)
    probs[:, mask == IGNORE_INDEX] = 1.0 / len(labels)
    refined = labels[dense_crf(image, probs, params).argmax(axis=0)].astype(np.uint8)
    refined[mask == IGNORE_INDEX] = IGNORE_INDEX
    return refined
