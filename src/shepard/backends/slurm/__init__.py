"""Slurm: a flock's jobs run as tasks of Slurm job arrays (docs/slurm.md).

- `config.py`: the `[backend.slurm]` section (`SlurmConfig`);
- `spec.py`: Slurm's notations (time limits, memory sizes, array index sets), parsed without I/O;
- `ctl.py`: sbatch, squeue, scontrol and scancel, their output parsed;
- `backend.py`: `SlurmBackend`, the hooks of the array template (backends/arrays.py) and the
  sheep mode.

Importing this package loads nothing else, so the flock configuration can read the section.
"""
