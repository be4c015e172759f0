"""``PGDDistiller``: the teacher/student wrapper every KD method trains through.

Registered in mmdet's MODELS, so an ordinary mmdet/mmengine config trains it::

    model = dict(type='PGDDistiller', detector='atss', student=<atss model dict>,
                 teacher=<atss model dict>, teacher_checkpoint='teacher.pth',
                 distill=dict(method='pgd', strategy='pgw', alpha=0.08, ...))

The wrapper owns what is the same for every method: the teacher (frozen: no gradient, eval
mode whatever ``train()`` is called with, its weights never in the distiller's checkpoints,
they come from ``teacher_checkpoint``), the teacher's input renormalisation, the student's
neck/head inheritance, the two adapters (the recorders, :mod:`pgd.distill.adapters`), the KD
diagnostics. It knows nothing of a method: it builds ``self.kd`` from the registry
(:func:`pgd.distill.methods.build_method`) and, every step, calls
``self.kd(records, data_samples)`` and names the returned terms ``loss_<method>_<term>``.
Inference (``predict``) is the student's.
"""

from __future__ import annotations

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmengine.logging import MMLogger

from pgd.distill.adapters import Captured, Records, make_adapter
from pgd.distill.diagnostics import make_diagnostics
from pgd.distill.health import inherit_neck_head, same_architecture
from pgd.distill.methods import MethodContext, build_method
from pgd.errors import ConfigError


@MODELS.register_module()
class PGDDistiller(BaseDetector):
    def __init__(self, detector: str, student: dict, teacher: dict, distill: dict,
                 teacher_checkpoint: str | None = None, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from pgd.distill.config import parse_distill

        self.detector_name = detector
        self.distill = parse_distill(distill)  # the resolved section, typed again at this edge
        self.distill_cfg = self.distill.dump()
        self.teacher_checkpoint = teacher_checkpoint
        self.student = MODELS.build(student)
        # Paired seeds: everything built after the student (teacher, KD modules) draws its
        # construction-time init from a forked RNG, so the student's init_weights() sees the
        # same torch RNG state as a plain student run of the same seed (docs/main-job.md).
        with torch.random.fork_rng(devices=[]):
            self._build_rest(detector, student, teacher)

    def _build_rest(self, detector: str, student: dict, teacher: dict) -> None:
        self.teacher = MODELS.build(teacher)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.s_adapter = make_adapter(detector, self.student)
        self.t_adapter = make_adapter(detector, self.teacher)
        self.kd = build_method(self.distill, MethodContext(detector, student, teacher))
        self.kd.attach(self.s_adapter, self.t_adapter)  # a method's extra records (CrossKD's tower layer)
        self._same_arch = same_architecture(student, teacher)
        self.inherit_report = None  # set by init_weights when the student inherits
        self.diagnostics = make_diagnostics(self.distill)  # None when distill.diagnostics_interval = 0
        self._renorm = self._renorm_params(student.get("data_preprocessor"), teacher.get("data_preprocessor"))
        self._register_state_dict_hook(_drop_teacher_keys)
        self._register_load_state_dict_pre_hook(self._keep_teacher_on_load)

    # ------------------------------------------------------------------ set-up
    def _keep_teacher_on_load(self, state_dict, prefix, *args):
        """Checkpoints hold no teacher: loading one keeps the teacher's current weights."""
        for key, value in self.teacher.state_dict().items():
            state_dict.setdefault(f"{prefix}teacher.{key}", value)

    @staticmethod
    def _renorm_params(s_pre, t_pre):
        """Student-normalised inputs -> teacher-normalised, when the two preprocessors differ."""
        if not s_pre or not t_pre:
            return None
        keys = ("mean", "std", "bgr_to_rgb")
        if all(s_pre.get(k) == t_pre.get(k) for k in keys):
            return None
        return dict(
            s_mean=torch.tensor(s_pre["mean"]).view(1, -1, 1, 1),
            s_std=torch.tensor(s_pre["std"]).view(1, -1, 1, 1),
            t_mean=torch.tensor(t_pre["mean"]).view(1, -1, 1, 1),
            t_std=torch.tensor(t_pre["std"]).view(1, -1, 1, 1),
            flip=bool(s_pre.get("bgr_to_rgb")) != bool(t_pre.get("bgr_to_rgb")),
        )

    def init_weights(self):
        logger = MMLogger.get_current_instance()
        self.student.init_weights()
        self.kd.init_weights()  # each method its own (its authors') initialisation
        if self.teacher_checkpoint:
            from mmengine.runner import load_checkpoint

            load_checkpoint(self.teacher, self.teacher_checkpoint, map_location="cpu", strict=True,
                            logger=logger, revise_keys=[(r"^module\.", ""), (r"^student\.", "")])
            logger.info(f"teacher weights loaded from {self.teacher_checkpoint}")
        else:
            self.teacher.init_weights()
            logger.warning("the teacher has random weights (allow_random_teacher): tests/benchmarks only")
        if self.distill.inherit_teacher_neck_head:
            self._inherit_neck_head(logger)
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def _inherit_neck_head(self, logger) -> None:
        """Copy the teacher's neck and head tensors into the student where names and shapes
        match (the released recipe; a narrower student inherits nothing it cannot hold). A
        same-architecture pair must copy everything (:func:`pgd.distill.health.inherit_neck_head`)."""
        self.inherit_report = inherit_neck_head(self.student, self.teacher, same_arch=self._same_arch, logger=logger)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # always: frozen BN statistics, eval-mode decoding
        return self

    # ------------------------------------------------------------------ forward paths
    def extract_feat(self, batch_inputs):
        return self.student.extract_feat(batch_inputs)

    def _forward(self, batch_inputs, batch_data_samples=None):
        return self.student._forward(batch_inputs, batch_data_samples)

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def teacher_inputs(self, batch_inputs, batch_data_samples):
        r = self._renorm
        if r is None:
            return batch_inputs
        dev = batch_inputs.device
        raw = batch_inputs * r["s_std"].to(dev) + r["s_mean"].to(dev)
        if r["flip"]:
            raw = raw.flip(1)
        x = (raw - r["t_mean"].to(dev)) / r["t_std"].to(dev)
        pad = torch.zeros_like(x[:, :1])
        for i, sample in enumerate(batch_data_samples):  # padding stays 0, as the preprocessor pads
            h, w = sample.metainfo["img_shape"][:2]
            pad[i, :, :h, :w] = 1
        return x * pad

    @property
    def mask_health(self):
        """The method's mask-health accumulator (PGD), None for a method without one."""
        return self.kd.mask_health

    def teacher_forward(self, batch_inputs, batch_data_samples) -> Captured:
        """The teacher's records: neck features, captured tower features and head outputs
        (``.head``), without gradient."""
        with torch.no_grad(), self.t_adapter.capture() as feats:
            x = self.teacher.extract_feat(self.teacher_inputs(batch_inputs, batch_data_samples))
            self.teacher.bbox_head(x)
        return feats

    def records(self, student: Captured, batch_inputs, batch_data_samples) -> Records:
        """The step's records: the student's (captured during its loss) and the teacher's."""
        return Records(student=student, teacher=self.teacher_forward(batch_inputs, batch_data_samples),
                       s_adapter=self.s_adapter, t_adapter=self.t_adapter)

    def loss(self, batch_inputs, batch_data_samples):
        if self.teacher.training:
            raise RuntimeError("the teacher must stay in eval mode")
        with self.s_adapter.capture() as s_feats:
            losses = self.student.loss(batch_inputs, batch_data_samples)
        records = self.records(s_feats, batch_inputs, batch_data_samples)
        prefix = f"loss_{self.kd.name}_"
        kd_losses = {prefix + term: value for term, value in self.kd(records, batch_data_samples).items()}
        if self.diagnostics is not None and self.training:
            self.diagnostics.step(self, losses, kd_losses, records, batch_data_samples)
        overlap = set(kd_losses) & set(losses)
        if overlap:
            raise ConfigError(f"distillation loss names clash with the detector's: {sorted(overlap)}")
        losses.update(kd_losses)
        return losses


def _drop_teacher_keys(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + "teacher.")]:
        del state_dict[key]
    return state_dict
