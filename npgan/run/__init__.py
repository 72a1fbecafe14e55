"""The run wing: a training run on disk and the ``npgan`` command line.

* :mod:`~npgan.run.config`: a run's configuration and its file, ``config.toml``;
* :mod:`~npgan.run.presets`: the presets, their architectures and data, and :func:`~npgan.run.presets.build`;
* :mod:`~npgan.run.experiment`: create, train, checkpoint, resume, sample and evaluate a run directory;
* :mod:`~npgan.run.checkpoint`: checkpoints as data, never code;
* :mod:`~npgan.run.history`: ``history.csv``;
* :mod:`~npgan.run.runlock`: one writer per run directory;
* :mod:`~npgan.run.memory` and :mod:`~npgan.run.machine`: what a step needs and what the machine has;
* :mod:`~npgan.run.cli`: ``npgan train | resume | sample | export | info | download``.

The top wing: it imports the engine, the data, GAN and evaluation wings; nothing imports it.
"""
