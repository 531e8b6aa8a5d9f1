"""The training engine shared by the stages: processes (torchrun/DDP), mixed precision, the loop,
checkpoints and exact resume, atomic file writes, stage markers and guards.

Porting a stage (see l2g/stages/train.py for the classification stage)::

    from l2g.engine import atomic, distributed
    from l2g.engine.run_folder import start_run
    from l2g.engine.trainer import LoopSettings, Trainer

    ctx = distributed.setup(config.device)               # joins torchrun's process group, picks the GPU
    final = run_dir / "checkpoints" / "final.pt"
    plan = start_run(config, run_dir, resume, overwrite, final)   # "fresh" | "resume" | "finished"
    if plan != "finished":
        model = build_model(config).to(ctx.device)       # everything trained, under one nn.Module
        optimizer = build_optimizer(model)               # param groups may carry "lr_mult"
        trainer = Trainer(run_dir, to_dict(config), model, optimizer, dataset,
                          step=lambda model, batch: {"loss": ..., "loss_ce": ...},
                          settings=LoopSettings.from_config(config, progress),  # or LoopSettings(...)
                          lr_schedule=lambda it, per_epoch, total: base_lr(it, total),
                          batch_ids=lambda batch: [ids[i] for i in batch["index"].tolist()],
                          resume=plan == "resume")
        result = trainer.fit()
        if ctx.is_main:
            atomic.save_torch(final, {"model": model.state_dict()})
        distributed.barrier()

Dataset items are dicts of tensors (plus anything the default collate accepts); a ``set_epoch(epoch)``
method, if present, is called at each epoch start. Randomness should come from (seed, epoch, index),
as in :class:`l2g.data.classification.ClassificationDataset`, for an exact resume.
"""
