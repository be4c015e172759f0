"""RunConfig -> mmengine Config: the one place where the platform's run description becomes
an ordinary mmdet/mmengine config (which ``mmdet``'s own tools could also run)."""

from __future__ import annotations

import torch
from mmengine.config import Config

from pgd.config.run import RunConfig, ScheduleConfig
from pgd.training.data import DataFiles, dataloaders, resolve_data


def effective_lr(schedule: ScheduleConfig, world_size: int = 1) -> float:
    """Linear scaling rule: base_lr * (batch_size * world_size) / base_batch_size."""
    return schedule.base_lr * schedule.batch_size * world_size / schedule.base_batch_size


def use_cuda(run: RunConfig) -> bool:
    if run.device == "cuda" and not torch.cuda.is_available():
        from pgd.errors import ConfigError

        raise ConfigError("device='cuda' but torch sees no GPU; use device: auto or cpu")
    return run.device != "cpu" and torch.cuda.is_available()


def model_section(run: RunConfig, files: DataFiles) -> dict:
    from pgd.detectors import model_config

    if run.distill is not None:
        from pgd.distill.config import distiller_model_config

        return distiller_model_config(run, num_classes=len(files.classes))
    return model_config(run.model, len(files.classes), backbone_checkpoint=run.backbone_checkpoint,
                        frozen_backbone_bn=run.schedule.frozen_backbone_bn)


def build_config(
    run: RunConfig,
    *,
    world_size: int = 1,
    launcher: str = "none",
    files: DataFiles | None = None,
    extra_hooks: list | None = None,
) -> Config:
    """The complete mmengine config of a (resolved) run."""
    from pgd.config.run import resolve_run

    run = resolve_run(run)
    files = files or resolve_data(run.data)
    sch = run.schedule
    cuda = use_cuda(run)
    cfg = dict(
        default_scope="mmdet",
        custom_imports=dict(imports=["pgd.integration"], allow_failed_imports=False),
        model=model_section(run, files),
        work_dir=run.work_dir,
        **dataloaders(run.data, files, sch, run.seed),
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=sch.epochs, val_interval=sch.val_interval),
        val_cfg=dict(type="ValLoop"),
        optim_wrapper=dict(
            type="OptimWrapper",
            optimizer=dict(
                type="SGD",
                lr=effective_lr(sch, world_size),
                momentum=sch.momentum,
                weight_decay=sch.weight_decay,
            ),
            clip_grad=dict(max_norm=sch.grad_clip, norm_type=2) if sch.grad_clip else None,
        ),
        param_scheduler=[
            dict(type="LinearLR", start_factor=sch.warmup_ratio, by_epoch=False, begin=0,
                 end=max(sch.warmup_iters, 1)),
            dict(type="MultiStepLR", begin=0, end=sch.epochs, by_epoch=True,
                 milestones=list(sch.lr_steps), gamma=sch.lr_gamma),
        ],
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=sch.log_interval),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", interval=sch.checkpoint_interval,
                            max_keep_ckpts=sch.max_keep_ckpts, save_best="coco/AP", rule="greater"),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        custom_hooks=[dict(type="FiniteLossHook"), dict(type="EpochSummaryHook")]
        + ([dict(type="MaskHealthHook")] if run.distill is not None else [])  # docs/health.md
        + ([dict(type="LatencyHook", num_images=run.latency_images)] if run.latency_images > 0 else [])
        + ([dict(type="KDDiagnosticsHook")] if run.distill is not None and run.method != "ld"
           and run.distill.diagnostics_interval > 0 else [])  # pgd/distill/diagnostics.py
        + list(extra_hooks or []),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl" if cuda else "gloo"),
        ),
        randomness=dict(seed=run.seed, deterministic=False),
        log_processor=dict(type="LogProcessor", window_size=sch.log_interval, by_epoch=True),
        log_level="INFO",
        launcher=launcher,
        load_from=run.load_from,
        resume=False,
        visualizer=dict(type="DetLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")],
                        name="visualizer"),
    )
    if launcher != "none":
        cfg["model_wrapper_cfg"] = dict(
            type="PGDDistributedDataParallel", broadcast_buffers=False,
            find_unused_parameters=run.find_unused_parameters,
        )
    if cfg["optim_wrapper"]["clip_grad"] is None:
        del cfg["optim_wrapper"]["clip_grad"]
    return Config(cfg)
