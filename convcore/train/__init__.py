"""Training and evaluation: ``fit(config)`` is what ``convcore train`` runs,
``evaluate_checkpoint(path)`` is ``convcore evaluate``.

A run is fully determined by its configuration, its seed and its thread
count, and a checkpoint holds every piece of its state, so stopping after
epoch k and resuming ends with the same weights as an uninterrupted run.

One module per job (under ``convcore/train/``): ``config`` (the run configuration),
``build`` (model, data, loss and optimizer from a
configuration), ``checkpoint`` (checkpoint files and
random states), ``loop`` (the training loop),
``report`` (progress, log lines, metrics, plots) and
``evaluate``.  Every name is re-exported here, where
users import them from.
"""
from convcore.train.config import (ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES,  # noqa: F401
                                   TrainConfig, check_config, field_kinds)
from convcore.train.build import (_check_stored_model, _registry_model, _shown,  # noqa: F401
                                  _to_device, _xp_of, build_loss, build_model,
                                  build_optimizer, check_input_size, custom_model_message,
                                  load_data, model_names, skip_first_input_grad)
from convcore.train.checkpoint import (CHECKPOINT, FORMAT_VERSION,  # noqa: F401
                                       _checkpoint_path, _host, _set_rng_state, _split,
                                       module_rng_states, read_checkpoint, save_checkpoint,
                                       set_module_rng_states)
from convcore.train.report import (_plots_safe, _Progress, _write_metrics,  # noqa: F401
                                   conf_from)
from convcore.train.evaluate import (_forward_batches, accuracy_from_confusion,  # noqa: F401
                                     evaluate_checkpoint, format_report)
from convcore.train.loop import (_ENVIRONMENT, Terminated, _loss_normaliser,  # noqa: F401
                                 _resume_overrides, _sigterm_handler, _silent, fit)

__all__ = ["TrainConfig", "fit", "evaluate_checkpoint", "format_report", "Terminated",
           "read_checkpoint", "build_model", "model_names"]
