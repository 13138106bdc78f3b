"""From raw values to checked ``Settings``: the rules the schema's tables cannot state alone.

Three passes, each reporting every problem it finds before stopping: (1) each section
header is classified (fixed, ``TASK name`` or input) and each value is typed against its
key; (2) defaults are filled in, including those derived from other sections; (3) the
sections are checked against each other. Every message names the place (file and line, or
the override), the ``[SECTION] key``, what was expected and what was received.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from sfg_app import arguments, registry
from sfg_app.config import schema
from sfg_app.config.settings import FIXED_ATTRIBUTES, InputSettings, Settings, task_settings
from sfg_app.config.sources import Origin, RawConfig, RawSection
from sfg_app.errors import ConfigError
from sfg_app.keys import Invalid, Key, Name, closest, did_you_mean


class Problems:
    """Collects messages so that one run reports every mistake of a pass at once."""

    def __init__(self, source: str):
        self.source = source
        self.messages: list[str] = []

    def add(self, origin: Origin | str, message: str) -> None:
        self.messages.append(f"{origin}: {message}")

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise ConfigError(self.messages[0])
        if self.messages:
            listed = "\n".join(f"- {message}" for message in self.messages)
            raise ConfigError(f"{len(self.messages)} problems in {self.source}:\n{listed}")


@dataclass
class Value:
    value: Any
    origin: Origin


# ------------------------------------------------------------ pass 1: types

def _fixed_section_near(header: str) -> str | None:
    """The fixed section a header probably misspells: similar, or its first 4+ letters."""
    upper = header.upper()
    match = difflib.get_close_matches(upper, list(schema.FIXED_SECTIONS), n=1, cutoff=0.75)
    if match:
        return match[0]
    if len(upper) >= 4:
        return next((title for title in schema.FIXED_SECTIONS if title.startswith(upper)),
                    None)
    return None


def classify(header: str) -> str:
    """"fixed", "task" or "input"; ``Invalid`` with the reason otherwise."""
    if header in schema.FIXED_SECTIONS:
        return "fixed"
    if header.upper() in schema.NIFTYNET_SECTIONS:
        raise Invalid(schema.NIFTYNET_SECTIONS[header.upper()])
    if header.startswith("TASK "):
        if Name.pattern.fullmatch(header[5:]):
            return "task"
        raise Invalid(f"[{header}]: a task name is made of letters, digits, _ and -.")
    near = _fixed_section_near(header)
    if near:
        raise Invalid(f"unknown section [{header}]. Did you mean [{near}]? Section names "
                      "are case-sensitive, and an input section may not be named so close "
                      "to a fixed section.")
    if header.lower().startswith("task"):
        raise Invalid(f"unknown section [{header}]. A task section is written "
                      f"[TASK name], e.g. [TASK {header[4:].strip() or 'organs'}].")
    if Name.pattern.fullmatch(header):
        return "input"
    raise Invalid(f"invalid section name [{header}]. Fixed sections are "
                  f"{', '.join(schema.FIXED_SECTIONS)} and [TASK name]; any other section "
                  "is an input, named with letters, digits, _ and -.")


def _title(section: schema.SectionSchema) -> str:
    return {"<input>": "input sections", "TASK <name>": "[TASK name] sections"}.get(
        section.title, f"[{section.title}]")


def _unknown_key(header: str, key: str, section: schema.SectionSchema) -> str:
    parts = [f"[{header}] has no key {key!r}."]
    homes = [_title(other) for other in schema.all_schemas() if key in other.keys]
    if key in schema.NIFTYNET_KEYS:
        parts.append(schema.NIFTYNET_KEYS[key])
    elif homes:
        parts.append(f"{key!r} belongs to {homes[0]}.")
    else:
        # The closest key of this section, unless a key of another section is closer.
        owners = {name: _title(other) for other in schema.all_schemas() for name in other.keys}
        owners.update({name: "" for name in section.keys})
        near = closest(key, list(owners))
        if near:
            where = f" of {owners[near]}" if owners[near] else ""
            parts.append(f"Did you mean {near!r}{where}?")
    parts.append("Every key is listed by `sfg_train --help-config`.")
    return " ".join(parts)


def _received(value: Any) -> str:
    shown = repr(value.strip()) if isinstance(value, str) else repr(value)
    return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} characters)"


def invalid_value(header: str, key: str, expected: str, received: Any, hint: str = "") -> str:
    return (f"invalid value for [{header}] {key}. Expected {expected}. Received "
            f"{key} = {_received(received)}. {hint}").rstrip()


def _typed_section(raw: RawSection, section: schema.SectionSchema,
                   problems: Problems) -> dict[str, Value]:
    values = {}
    for key, entry in raw.entries.items():
        spec = section.keys.get(key)
        if spec is None:
            problems.add(entry.origin, _unknown_key(raw.header, key, section))
            continue
        if entry.value is None or (isinstance(entry.value, str) and not entry.value.strip()):
            continue  # an empty value leaves the key unset
        try:
            values[key] = Value(spec.type.convert(entry.value, entry.base_dir), entry.origin)
        except Invalid as error:
            problems.add(entry.origin, invalid_value(raw.header, key, spec.type.expected,
                                                     entry.value, error.hint))
    return values


# ------------------------------------------------- passes 2 and 3: defaults, checks

class _TypedConfig:
    """The typed values of one config and where each was set: what both later passes
    read, so that each problem is reported at the line (or override) that caused it."""

    def __init__(self, raw: RawConfig, typed: dict[str, dict[str, Value]]):
        self.raw = raw
        self.typed = typed
        self.problems = Problems(raw.source)
        self.inputs = [h for h in typed if h not in schema.FIXED_SECTIONS
                       and not h.startswith("TASK ")]
        self.task_headers = [h for h in typed if h.startswith("TASK ")]

    def origin(self, header: str, key: str | None = None) -> Origin | str:
        if key is not None and key in self.typed.get(header, {}):
            return self.typed[header][key].origin
        section = self.raw.sections.get(header)
        return section.origin if section else self.raw.source

    def explicit(self, header: str, key: str) -> Any:
        entry = self.typed.get(header, {}).get(key)
        return entry.value if entry else None

    def problem(self, header: str, key: str | None, message: str) -> None:
        self.problems.add(self.origin(header, key), message)

    def check_reference(self, header: str, key: str, name: str, what: str,
                        extra: tuple[str, ...] = ()) -> bool:
        """A key naming an input section; did-you-mean among the input sections."""
        if name in self.inputs:
            return True
        candidates = tuple(extra) + tuple(self.inputs)
        hint = did_you_mean(name, candidates) or (
            f"Input sections: {', '.join(self.inputs)}." if self.inputs
            else "The config has no input section.")
        self.problem(header, key, f"[{header}] {key} = {name!r}: there is no input "
                                  f"section [{name}] {what}. {hint}")
        return False


class _Defaults:
    """Pass 2: each section's values, explicit or default, with the defaults that follow
    from other sections (a task's loss, the balanced sampler's map, a label section's
    interp_order) and the mistakes found while filling them in."""

    def __init__(self, config: _TypedConfig):
        self.config = config

    def values(self, header: str, section: schema.SectionSchema,
               kinds: frozenset[str] | None = None,
               why_not: Callable[[Key], str] | None = None) -> dict[str, Any]:
        """Explicit values, else defaults.

        With ``kinds``, a key whose ``applies_to`` misses them is None, and setting it is
        an error that ``why_not(key)`` explains.
        """
        config = self.config
        model_dir = config.explicit("SYSTEM", "model_dir")
        values = {}
        for name, spec in section.keys.items():
            value = config.explicit(header, name)
            applies = spec.applies_to is None or kinds is None or bool(spec.applies_to & kinds)
            if not applies:
                if value is not None:
                    config.problem(header, name, f"[{header}] {name} does not apply here: "
                                                 f"{why_not(spec)}")
                values[name] = None
            elif value is not None:
                values[name] = value
            elif spec.required:
                config.problem(header, None, f"missing required key [{header}] {name}: "
                                             f"{spec.doc} Expected {spec.type.expected}.")
                values[name] = None
            elif isinstance(spec.default, schema.UnderModelDir):
                values[name] = model_dir / spec.default.name if model_dir else None
            elif isinstance(spec.default, schema.Derived):
                values[name] = None  # filled in by the caller
            else:
                values[name] = spec.default
        return values

    def fixed_values(self, title: str) -> dict[str, Any]:
        if title != "NETWORK":
            return self.values(title, schema.FIXED_SECTIONS[title])
        sampler = self.config.explicit("NETWORK", "window_sampling") or "uniform"
        kinds = frozenset() if sampler in ("uniform", "resize") else frozenset({"weighted",
                                                                                 "balanced"})
        return self.values("NETWORK", schema.NETWORK, kinds,
                           lambda spec: f"the {sampler} sampler reads no sampling map.")

    def task_values(self, name: str) -> dict[str, Any]:
        """The values of ``[TASK name]``: the common keys and those of its type."""
        config, header = self.config, f"TASK {name}"
        kind = config.explicit(header, "type")
        task_type = schema.task_type(kind)
        kinds = frozenset({kind}) if task_type else frozenset(registry.TASKS.names())
        values = self.values(header, schema.task_schema(), kinds, lambda spec: (
            f"[{header}] is a {kind} task, and {spec.name} is for "
            f"{' and '.join(sorted(spec.applies_to))} tasks only."))
        if task_type is not None:
            losses = task_type.loss_names
            if values["loss"] is None:
                values["loss"] = losses[0]
            elif values["loss"] not in losses:
                config.problem(header, "loss", invalid_value(
                    header, "loss", f"a loss for {kind}: {', '.join(losses)}", values["loss"]))
            own = schema.task_schema(kind).keys
            values = {key: value for key, value in values.items() if key in own}
        for key in ("target", "mask"):
            if values.get(key) is not None:
                config.check_reference(header, key, values[key], f"for the task {key}")
        return values

    def sampling_map(self, network: dict[str, Any], tasks: dict[str, dict]) -> str | None:
        sampler, chosen = network["window_sampling"], network["sampling_map"]
        if chosen is not None:
            self.config.check_reference("NETWORK", "sampling_map", chosen,
                                        "for the sampling map")
            return chosen
        if sampler == "balanced":
            targets = [task["target"] for task in tasks.values() if _holds_labels(task)]
            if targets:
                return targets[0]
        if sampler in ("weighted", "balanced"):
            fallback = (" (or a segmentation task, whose target is then used)"
                        if sampler == "balanced" else "")
            self.config.problem("NETWORK", "window_sampling",
                                f"[NETWORK] window_sampling = {sampler} needs [NETWORK] "
                                f"sampling_map naming an input section{fallback}.")
        return None

    def input_values(self, name: str, tasks: dict[str, dict],
                     network: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        is_value = config.explicit(name, "value_column") is not None
        kinds = {"value" if is_value else "image"}
        for key, kind in (("csv_file", "csv"), ("path_to_search", "search")):
            if config.explicit(name, key) is not None:
                kinds.add(kind)
        values = self.values(name, schema.INPUT, frozenset(kinds),
                             lambda spec: _why_not_input(name, spec))
        if not {"csv", "search"} & kinds:
            config.problem(name, None, f"input section [{name}] defines neither "
                                       "path_to_search nor csv_file: set one of them.")
        if {"csv", "search"} <= kinds:
            config.problem(name, "csv_file", f"input section [{name}] defines both "
                                             "path_to_search and csv_file: keep one.")
        if not is_value:
            roles = self.label_roles(name, tasks, network)
            values["interp_order"] = self.interp_order(name, roles)
            for key in ("normalisation", "intensity_window", "percentile_clip"):
                if roles and values[key] not in (None, "none"):
                    config.problem(name, key, f"[{name}] {key} = {values[key]}, but "
                                              f"[{name}] is {' and '.join(roles)}: labels "
                                              f"keep their values. Remove {key} from "
                                              f"[{name}].")
            foreground = values["foreground_type"]
            if foreground not in schema.FOREGROUND_RULES:
                config.check_reference(name, "foreground_type", foreground,
                                       "for the foreground mask", schema.FOREGROUND_RULES)
        return values

    def label_roles(self, name: str, tasks: dict[str, dict],
                    network: dict[str, Any]) -> list[str]:
        """What makes the section ``name`` hold labels, in words (none: an image)."""
        roles = [f"the target of the {values['type']} task {task!r}"
                 for task, values in tasks.items()
                 if _holds_labels(values) and values["target"] == name]
        roles += [f"the mask of the task {task!r}" for task, values in tasks.items()
                  if values["mask"] == name]
        roles += [f"the foreground mask of [{other}]" for other in self.config.inputs
                  if self.config.explicit(other, "foreground_type") == name]
        if network["window_sampling"] == "balanced" and network["sampling_map"] == name:
            roles.append("the label map of the balanced sampler")
        return roles

    def interp_order(self, name: str, roles: list[str]) -> int:
        """0 for label sections; an explicit order > 0 on them is an error."""
        explicit = self.config.explicit(name, "interp_order")
        if roles and explicit is not None and explicit > 0:
            self.config.problem(name, "interp_order", invalid_value(
                name, "interp_order", f"0 (nearest neighbour), because [{name}] is "
                                      f"{' and '.join(roles)}", explicit))
        if explicit is not None:
            return explicit
        return 0 if roles else 1


def _why_not_input(name: str, spec: Key) -> str:
    if "image" in spec.applies_to:
        return (f"[{name}] sets value_column, so it holds one value per subject, not "
                "an image.")
    if "search" in spec.applies_to:
        return (f"{spec.name} filters the files found by path_to_search, and [{name}] "
                "has no path_to_search.")
    return f"{spec.name} needs csv_file."


class _CrossChecks:
    """Pass 3: the rules between sections and between keys, once every value is known
    (the task list against the task sections, each input section's role, the window
    against the border, the ``[SFG]`` and histogram rules that ``arguments`` states for
    the components too)."""

    def __init__(self, config: _TypedConfig):
        self.config = config

    def check_version(self) -> None:
        version = self.config.explicit("SYSTEM", "config_version")
        if version is not None and version > schema.CONFIG_VERSION:
            self.config.problem("SYSTEM", "config_version", invalid_value(
                "SYSTEM", "config_version", f"a version this code reads (at most "
                                            f"{schema.CONFIG_VERSION})", version,
                "The config was written for a newer sfg: upgrade sfg."))

    def check_task_list(self, listed: tuple[str, ...]) -> list[str]:
        """The listed tasks that have a section; a problem per name in one place only."""
        config = self.config
        sections = [header[5:] for header in config.task_headers]
        for name in listed:
            if name not in sections:
                hint = did_you_mean(name, sections) or "Add the section or remove the name."
                config.problem("MULTITASK", "tasks", f"[MULTITASK] tasks names {name!r}, "
                                                     f"but there is no [TASK {name}] "
                                                     f"section. {hint}")
        for name in sections:
            if name not in listed:
                config.problem(f"TASK {name}", None, f"[TASK {name}] is not listed in "
                                                     "[MULTITASK] tasks: add it there or "
                                                     "delete the section.")
        return [name for name in listed if name in sections]

    def check_inputs(self, inputs: dict[str, dict], images: tuple[str, ...],
                     tasks: dict[str, dict], network: dict[str, Any]) -> tuple | None:
        """Checks the roles of the input sections; returns the images' window size."""
        window = self._image_window(inputs, images)
        for task, values in tasks.items():
            if inputs.get(values["target"]) is not None:
                self._check_task_inputs(f"TASK {task}", values, inputs, window)
        sampling_map = inputs.get(network["sampling_map"])
        if sampling_map is not None and sampling_map["value_column"] is not None:
            self.config.problem("NETWORK", "sampling_map",
                                f"[NETWORK] sampling_map names [{network['sampling_map']}], "
                                "which sets value_column; it must be an image.")
        return window

    def _image_window(self, inputs: dict[str, dict], images: tuple[str, ...]) -> tuple | None:
        """The window size the image sections share (None when none states one)."""
        config, windows = self.config, {}
        for name in images:
            if not config.check_reference("MULTITASK", "image", name, "for the image"):
                continue
            if inputs[name]["value_column"] is not None:
                config.problem(name, "value_column", f"[MULTITASK] image lists [{name}], "
                                                     "which sets value_column: an image "
                                                     "section must hold images.")
            elif inputs[name]["spatial_window_size"] is None:
                config.problem(name, None, f"missing required key [{name}] "
                                           "spatial_window_size: every image section needs "
                                           "the window size, e.g. (64, 64, 32).")
            else:
                windows[name] = inputs[name]["spatial_window_size"]
        if len(set(windows.values())) > 1:
            config.problem("MULTITASK", "image", "the image sections disagree on "
                                                 "spatial_window_size: " + ", ".join(
                                                     f"[{n}] {w}" for n, w in windows.items()))
        return next(iter(windows.values()), None)

    def _check_task_inputs(self, header: str, values: dict[str, Any],
                           inputs: dict[str, dict], window: tuple | None) -> None:
        """A task's target fits its type's heads and the window; its mask is an image."""
        config, target = self.config, inputs[values["target"]]
        image_level = target["value_column"] is not None
        head_kinds = getattr(schema.task_type(values["type"]), "head_kinds", ())
        if image_level and head_kinds and "image" not in head_kinds:
            config.problem(header, "target", f"[{header}] target [{values['target']}] is "
                                             "one value per subject (value_column); a "
                                             f"{values['type']} target must be an image.")
        if not image_level and head_kinds and "voxel" not in head_kinds:
            config.problem(header, "target", f"[{header}] target [{values['target']}] is "
                                             f"an image; a {values['type']} target is one "
                                             "value per subject: set csv_file and "
                                             "value_column in it.")
        own = target["spatial_window_size"]
        if window is not None and own is not None and own != window:
            config.problem(values["target"], "spatial_window_size", invalid_value(
                values["target"], "spatial_window_size",
                f"the image's window {window} (the section is the target of [{header}])",
                own))
        mask = inputs.get(values["mask"])
        if mask is not None and mask["value_column"] is not None:
            config.problem(header, "mask", f"[{header}] mask [{values['mask']}] is one value "
                                           "per subject (value_column); a mask must be an "
                                           "image.")

    def check_sfg(self, sfg: dict[str, Any], groups: int, max_iter: int) -> None:
        """The rules between [SFG] keys, as the grouping layers state them; groups
        decided from the tasks' agreement need a warm-up that ends before the run does
        (else the network inference runs was never decided). A fraction of the run
        ends by its last iteration however short the run (`arguments.schedule_iterations`),
        so a run of one iteration still decides its groups."""
        for key, expected, hint in arguments.grouping_problems(sfg, groups):
            self.config.problem("SFG", key, invalid_value("SFG", key, expected, sfg[key],
                                                          hint))
        warmup = sfg["warmup_iter"]
        if sfg["allocation"] == "agreement" and isinstance(warmup, int) \
                and warmup >= max_iter:
            self.config.problem("SFG", "warmup_iter", invalid_value(
                "SFG", "warmup_iter", f"fewer iterations than [TRAINING] max_iter = "
                                      f"{max_iter} with allocation = agreement", warmup,
                "The groups are decided when the warm-up ends: give a fraction such as "
                "1/3."))

    def check_histogram(self, network: dict[str, Any], inputs: dict[str, dict]) -> None:
        """[NETWORK] cutoff against norm_type, when a section uses histogram
        normalisation (the rule preprocessing applies)."""
        users = [name for name, values in inputs.items()
                 if values.get("normalisation") == "histogram"]
        problem = users and arguments.histogram_cutoff_problem(network["cutoff"],
                                                               network["norm_type"])
        if problem:
            self.config.problem("NETWORK", "cutoff", invalid_value(
                "NETWORK", "cutoff", problem, network["cutoff"],
                f"[{users[0]}] uses normalisation = histogram."))

    def check_training(self, training: dict[str, Any]) -> None:
        total = (training["exclude_fraction_for_validation"]
                 + training["exclude_fraction_for_inference"])
        if total >= 1:
            key = "exclude_fraction_for_inference"
            self.config.problem("TRAINING", key,
                                f"[TRAINING] exclude_fraction_for_validation + {key} = "
                                f"{total:g}: they must sum to less than 1 so that subjects "
                                "are left to train.")

    def check_border(self, border: tuple[int, int, int], window: tuple | None) -> None:
        """The border against the inference window: the explicit one, else the training
        window (the smallest a derived inference window can be)."""
        if window is not None and any(2 * b >= w for b, w in zip(border, window)):
            self.config.problem("INFERENCE", "border", invalid_value(
                "INFERENCE", "border", f"each value less than half the window {window}",
                border))

    def check_inference_window(self, inference: dict[str, Any], window: tuple | None,
                               network: dict[str, Any]) -> tuple | None:
        """An explicit ``[INFERENCE] spatial_window_size``: used by grid inference only, at
        least the training window, 2D when training is
        (``arguments.inference_window_problem``). Returns it when it is valid."""
        chosen = inference["spatial_window_size"]
        if chosen is None:
            return None
        if network["window_sampling"] == "resize":
            self.config.problem("INFERENCE", "spatial_window_size",
                                "[INFERENCE] spatial_window_size does not apply with "
                                "[NETWORK] window_sampling = resize: inference resizes each "
                                "whole volume to the training window. Remove the key.")
            return None
        problem = window is not None and arguments.inference_window_problem(chosen, window)
        if problem:
            self.config.problem("INFERENCE", "spatial_window_size", invalid_value(
                "INFERENCE", "spatial_window_size", problem, chosen,
                "Leave it unset to have it derived from [INFERENCE] memory_limit."))
            return None
        return tuple(chosen)


def _resolve(config: _TypedConfig) -> Settings:
    """Passes 2 and 3 in their order: a pass reports all its problems before stopping."""
    defaults, checks = _Defaults(config), _CrossChecks(config)
    checks.check_version()
    fixed = {title: defaults.fixed_values(title) for title in schema.FIXED_SECTIONS}
    multitask = fixed["MULTITASK"]
    task_names = checks.check_task_list(multitask["tasks"] or ())
    config.problems.raise_if_any()
    tasks = {name: defaults.task_values(name) for name in task_names}
    network = fixed["NETWORK"]
    network["sampling_map"] = defaults.sampling_map(network, tasks)
    inputs = {name: defaults.input_values(name, tasks, network) for name in config.inputs}
    window = checks.check_inputs(inputs, multitask["image"] or (), tasks, network)
    checks.check_sfg(fixed["SFG"], len(task_names) + 1, fixed["TRAINING"]["max_iter"])
    checks.check_training(fixed["TRAINING"])
    checks.check_histogram(network, inputs)
    inference_window = checks.check_inference_window(fixed["INFERENCE"], window, network)
    checks.check_border(fixed["INFERENCE"]["border"], inference_window or window)
    config.problems.raise_if_any()
    sections = {FIXED_ATTRIBUTES[title][0]: FIXED_ATTRIBUTES[title][1](**values)
                for title, values in fixed.items()}
    explicit = {header: {key: entry.value for key, entry in values.items()}
                for header, values in config.typed.items()}
    return Settings(**sections,
                    inputs={name: InputSettings(**values) for name, values in inputs.items()},
                    tasks={name: task_settings(values) for name, values in tasks.items()},
                    source=config.raw.source, explicit=explicit)


def _holds_labels(task: dict[str, Any]) -> bool:
    """Whether the task's type takes a label image as its target (segmentation)."""
    return getattr(schema.task_type(task["type"]), "label_target", False)


def build_settings(raw: RawConfig) -> Settings:
    problems = Problems(raw.source)
    typed: dict[str, dict[str, Value]] = {}
    for header, section in raw.sections.items():
        try:
            classify(header)
        except Invalid as error:
            problems.add(section.origin, error.hint)
            continue
        typed[header] = _typed_section(
            section, schema.section_schema(header), problems)
    problems.raise_if_any()
    return _resolve(_TypedConfig(raw, typed))
