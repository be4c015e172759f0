"""Render a teacher's quality heatmap (paper Fig. 2) and a foreground strategy's mask for one
image, over the image with its GT boxes; and the Fig. 2 grid of several detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def paint_levels(level_maps, first_centres, strides, out_hw) -> np.ndarray:
    """Max over levels of per-level maps painted on the input grid: the cell of a prior
    covers the ``stride x stride`` square centred on that prior's centre."""
    h, w = out_hw
    canvas = torch.zeros(h, w)
    for m, (cx, cy), s in zip(level_maps, first_centres, strides):
        up = F.interpolate(m[None, None].float().cpu(), scale_factor=s, mode="nearest")[0, 0]
        ox, oy = int(round(cx - s / 2)), int(round(cy - s / 2))  # top-left of the first cell
        big = torch.zeros(h + 2 * s + up.shape[0], w + 2 * s + up.shape[1])
        big[s + oy: s + oy + up.shape[0], s + ox: s + ox + up.shape[1]] = up
        canvas = torch.maximum(canvas, big[s: s + h, s: s + w])
    return canvas.numpy()


def image_maps(model, detector_name: str, dataset, index: int, strategy_cfg: dict) -> dict:
    """Quality (max over FPN levels, paper Eq. 1 with ``strategy_cfg['xi_cls']``) and the
    strategy's raw foreground importance of one image, painted on the input grid.

    Returns ``{img [h, w, 3] uint8 RGB, quality [h, w], fg [h, w], boxes [G, 4] (input
    pixels), img_id, img_shape, fg_positions}``.
    """
    from pgd.distill.adapters import make_adapter
    from pgd.distill.masks import PGDMaskParams, pgd_masks

    adapter = make_adapter(detector_name, model)
    try:
        item = dataset[index]
        batch = model.data_preprocessor(dict(inputs=[item["inputs"]], data_samples=[item["data_samples"]]), False)
        inputs, samples = batch["inputs"], batch["data_samples"]
        with torch.no_grad():
            head_outs = model.bbox_head(model.extract_feat(inputs))
        gt = samples[0].gt_instances
        masks = pgd_masks(adapter, head_outs, [gt.bboxes], [gt.labels], PGDMaskParams.from_mapping(strategy_cfg))
        strides = [int(s[0] if isinstance(s, (tuple, list)) else s)
                   for s in model.bbox_head.prior_generator.strides]
        priors = adapter.priors([tuple(q.shape[-2:]) for q in masks.quality_cls], inputs.device)
    finally:
        adapter.remove()
    starts = np.cumsum([0] + priors.level_sizes[:-1])
    first = [priors.centres[i].tolist() for i in starts]
    h, w = samples[0].metainfo["img_shape"][:2]
    quality = paint_levels([q[0] for q in masks.quality_cls], first, strides, inputs.shape[-2:])[:h, :w]
    fg = paint_levels([m[0] for m in masks.imp_cls], first, strides, inputs.shape[-2:])[:h, :w]
    pre = model.data_preprocessor
    img = inputs[0].cpu() * pre.std.cpu() + pre.mean.cpu()
    img = img[:, :h, :w].permute(1, 2, 0).clamp(0, 255).byte().numpy()
    if not getattr(pre, "_channel_conversion", False):  # inputs kept BGR
        img = img[..., ::-1]
    return dict(img=img, quality=quality, fg=fg, boxes=gt.bboxes.cpu().numpy(),
                img_id=samples[0].metainfo.get("img_id"), img_shape=[int(h), int(w)],
                fg_positions=sum(int((m > 0).sum()) for m in masks.fg_cls))


def _draw_boxes(ax, boxes, colour="white", lw=1.5, ls="-"):
    from matplotlib.patches import Rectangle

    for x1, y1, x2, y2 in boxes:
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw, ls=ls))


def render_quality_map(model, dataset, index: int, strategy_cfg: dict, out: str | Path,
                       *, title: str = "") -> dict:
    """Draw [image + GT | quality (max over levels) | strategy foreground] to ``out`` (PNG).

    ``model`` is a trained detector (the teacher) in eval mode; ``dataset`` an mmdet dataset
    whose pipeline yields ``inputs`` and ``data_samples`` with GT; ``strategy_cfg`` holds
    detector, strategy, xi_cls, xi_reg, k_cls, k_reg, topk_scope, strategy_params.
    Returns summary numbers (fraction of in-box positions the mask keeps, peak quality).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = image_maps(model, strategy_cfg["detector"], dataset, index, strategy_cfg)
    img, quality, fg, boxes = maps["img"], maps["quality"], maps["fg"], maps["boxes"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    panels = [("image + GT boxes", None), ("teacher quality (max over levels)", quality),
              (f"foreground importance I: {strategy_cfg['strategy']}", fg)]
    for ax, (name, heat) in zip(axes, panels):
        ax.imshow(img)
        if heat is not None:
            im = ax.imshow(heat, cmap="jet", alpha=0.55, vmin=0, vmax=max(float(heat.max()), 1e-6))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        _draw_boxes(ax, boxes)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title or f"image {maps['img_id']}")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    h, w = maps["img_shape"]
    return dict(out=str(out), num_gt=int(len(boxes)), fg_positions=maps["fg_positions"],
                peak_quality=float(quality.max()) if quality.size else 0.0,
                img_shape=[int(h), int(w)], gt_boxes=[[round(float(v), 1) for v in b] for b in boxes])


def box_peaks(quality: np.ndarray, boxes: np.ndarray) -> list[float]:
    """Peak of a painted quality map inside each box (pixels whose centre is inside)."""
    h, w = quality.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    out = []
    for x1, y1, x2, y2 in boxes:
        inside = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)
        out.append(float(quality[inside].max()) if inside.any() else 0.0)
    return out


def render_quality_grid(rows: list[dict], out: str | Path, *, title: str = "") -> list[dict]:
    """Paper Fig. 2: one row per detector, one column per image, each panel the image with
    its GT boxes and the detector's quality map (max over FPN levels) over it.

    ``rows``: ``[{label, maps: [image_maps(...) per image]}]``. Returns one summary dict per
    (row, image): label, img_id, peak quality, per-GT peak quality.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r["maps"]) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols + 0.8, 3.4 * n_rows), squeeze=False)
    summary = []
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row["maps"]):
                continue
            m = row["maps"][c]
            peak = float(m["quality"].max()) if m["quality"].size else 0.0
            ax.imshow(m["img"])
            im = ax.imshow(m["quality"], cmap="jet", alpha=0.55, vmin=0, vmax=max(peak, 1e-6))
            _draw_boxes(ax, m["boxes"])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="quality q")
            ax.set_title(f"{row['label']} | image {m['img_id']} | peak q {peak:.2f}", fontsize=9)
            summary.append(dict(label=row["label"], img_id=m["img_id"], peak_quality=peak,
                                num_gt=int(len(m["boxes"])),
                                gt_peak_quality=[round(v, 4) for v in box_peaks(m["quality"], m["boxes"])]))
    fig.suptitle(title or "quality score q (Eq. 1), max over FPN levels, GT boxes in white")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return summary
