"""Command-line flag values (a command's ``ctx.params``) -> the library's settings objects."""

from __future__ import annotations

from typing import Any

from pseudolabel.core.plain import choice_value


def chosen_sam(flags: dict[str, Any]) -> str:
    """The ``--sam`` model of a command (the settings default when the flag is not given)."""
    from pseudolabel.settings import ModelSettings

    return choice_value(flags.get("sam")) or ModelSettings.sam


def model_settings(flags: dict[str, Any]) -> Any:
    """ModelSettings from ``--device``, ``--precision``, ``--clip-*``, ``--sam*``, ``--detector*``, ``--seed``."""
    from pseudolabel.cli.components import component_options
    from pseudolabel.core.devices import autocast_dtype, resolve_device
    from pseudolabel.runner.torchrun import local_device
    from pseudolabel.settings import ModelSettings

    device = resolve_device(local_device(flags["device"]))
    defaults = ModelSettings()
    sam = chosen_sam(flags)
    return ModelSettings(
        device=device,
        autocast_dtype=autocast_dtype(choice_value(flags.get("precision")) or "fp32", device),
        clip_model=flags.get("clip_model", defaults.clip_model),
        clip_weights=flags.get("clip_weights", defaults.clip_weights),
        sam=sam,
        sam_checkpoint=flags.get("sam_checkpoint", defaults.sam_checkpoint),
        detector=flags.get("detector", defaults.detector),
        detector_weights=flags.get("detector_weights", defaults.detector_weights),
        sam3_model=flags.get("sam3_model", defaults.sam3_model),
        sam3_checkpoint=flags.get("sam3_checkpoint", defaults.sam3_checkpoint),
        seed=flags.get("seed", defaults.seed),
        compile_sam=flags.get("compile_sam", defaults.compile_sam),
        components=component_options("sam", sam, flags),
    )


def record_resolved_precision(ctx_params: dict[str, Any], device: Any) -> None:
    """Put the precision ``--precision`` becomes on ``device`` (``auto`` -> ``bf16`` or ``fp32``) in
    the command's parameters, so that config.yaml and the resume settings hold it: a resume on a
    machine where ``auto`` means something else is refused instead of mixing the two. ``device``
    None (a Ray run: each actor resolves its own) leaves the flag as given."""
    from pseudolabel.core.devices import resolve_precision

    if device is not None:
        ctx_params["precision"] = resolve_precision(choice_value(ctx_params.get("precision")) or "fp32", device)


def cpu_model_settings(flags: dict[str, Any]) -> Any:
    """ModelSettings as :func:`model_settings` on the CPU in fp32: which models and weights a run
    uses, for checking its files where the run itself resolves devices elsewhere (Ray actors)."""
    return model_settings({**flags, "device": "cpu", "precision": None})


def labeler_settings(flags: dict[str, Any]) -> Any:
    """LabelerSettings from ``generate``'s labeler flags (zero-shot when ``--labels none``), with
    the chosen labeler's declared options when it has some."""
    from pseudolabel.cli.components import component_options
    from pseudolabel.labelers.options import ExclusionOptions, PromptingOptions, ZeroShotOptions
    from pseudolabel.settings import LabelerSettings

    zero_shot = flags["labels"] is not None and str(flags["labels"]) == "none"
    return LabelerSettings(
        prompting=PromptingOptions(choice_value(flags["synonyms"]), flags["pole_candidates"]),
        exclusion=ExclusionOptions(flags["exclude"], flags["exclusion_threshold"], flags["exclusion_weights"]),
        zero_shot=ZeroShotOptions(zero_shot, flags["zero_shot_top_k"], flags["zero_shot_min_probability"]),
        components=component_options("labeler", choice_value(flags["method"]), flags),
    )


def refiner_settings(flags: dict[str, Any], names: tuple[str, ...]) -> Any:
    """RefinerSettings from the flags: the shared ``--label-confidence`` and the declared options
    of the refiners ``names``."""
    from pseudolabel.cli.components import component_options
    from pseudolabel.settings import RefinerSettings

    components = {key: value for name in names for key, value in component_options("refiner", name, flags).items()}
    return RefinerSettings(flags["label_confidence"], components)
