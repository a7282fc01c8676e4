"""Running a command over a dataset split: ``loop`` (shards, resume, workers, batches, atomic
writes), ``per_image`` (the per-image functions of generate, refine and overlay), ``manifest``,
``lock``, ``recorded_settings`` (a resume with other settings is refused) and the engines
(``ray_engine``, ``torchrun``)."""
