"""The training engine shared by the stages: processes (torchrun/DDP), mixed precision, the loop,
checkpoints and exact resume, atomic file writes, stage markers and guards.

Porting a stage (see l2g/stages/train.py for the classification stage, l2g/stages/seg_train.py for the
segmentation stage, which has its own epochs, batch size and resume-safe keys)::

    from l2g.engine import distributed
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
        # rank 0 writes train_metrics.json, then final.pt last; every rank waits
        trainer.finish(trainer.fit(), final, lambda: {"model": model.state_dict()}, len(dataset))

Dataset items are dicts of tensors (plus anything the default collate accepts); a ``set_epoch(epoch)``
method, if present, is called at each epoch start. Randomness should come from (seed, epoch, index),
as in :class:`l2g.data.classification.ClassificationDataset`, for an exact resume.
"""
