"""Everything a run or a feature store leaves on disk, in one layer.

`layout` names the paths of a run directory, `store` those of a feature store (and reads it),
`checkpoints` writes, rotates, lists and loads checkpoints, `weights` is the inference-export
format, `records` the metrics/event log, `disk` the free-space rule and `lock` the run lock.
Training, synthesis, operations and the CLI all use these; nothing here imports them.
"""
