"""Filters of the inference_engine role: an engine's options and command line, and what a
converge removes."""

import re
import shlex

INSTANCE_SETTINGS = re.compile(r"([a-z0-9_]+)-([0-9]+)\.env\Z")  # <engine>-<N>.env
TEMPLATE_UNIT = re.compile(r"inference-(.+)@\.service\Z")  # inference-<engine>@.service


def inference_engine_options(shared_options, shared_settings, *option_sets):
    """The engine's options by its own names: the settings every engine shares (SHARED_SETTINGS,
    by the kit's names), renamed by the engine's SHARED_OPTIONS map, then OPTION_SETS in order (a
    later one wins). An empty mapping or list leaves an option out (e.g. no media limits)."""
    options = {engine_name: shared_settings[kit_name] for kit_name, engine_name in shared_options.items()}
    for option_set in option_sets:
        options.update(option_set)
    return {name: value for name, value in options.items() if value != {} and value != []}


def inference_engine_list_options(options, on_command_line):
    """The list-valued OPTIONS, which engines that take them only on the command line (SGLang)
    get there; none for the others."""
    if not on_command_line:
        return {}
    return {name: value for name, value in options.items() if isinstance(value, list)}


def inference_engine_command_line(command, config_argument, list_options, extra_args):
    """What start_server.sh executes: COMMAND with its config file (CONFIG_ARGUMENT, already shell
    quoted: it may expand $CREDENTIALS_DIRECTORY), the loopback address, the instance's port from
    its environment file, LIST_OPTIONS (--name value ...) and the operator's EXTRA_ARGS."""
    words = [*(shlex.quote(str(word)) for word in [*command, "--config"]), config_argument]
    words += ["--host", "127.0.0.1", "--port", '"${ENGINE_PORT}"']
    for name, values in list_options.items():
        words += ["--" + name.replace("_", "-"), *(shlex.quote(str(value)) for value in values)]
    words += [shlex.quote(str(arg)) for arg in extra_args]
    return " ".join(words)


def inference_engine_stale(found_paths, engine, instance_ids, config_dir, engines_dir):
    """What a converge of ENGINE with INSTANCE_IDS stops and removes, from FOUND_PATHS (the files
    of CONFIG_DIR and the template units of /etc/systemd/system): the settings files of instances
    it does not run (any engine's; their units stop); and everything of other engines, their
    settings and config files, template units and start scripts. Virtualenvs stay, so switching
    back does not reinstall."""
    names = {path: path.rsplit("/", 1)[-1] for path in found_paths}
    wanted = {f"{engine}-{instance}.env" for instance in instance_ids}
    instances = sorted(name for name in names.values() if INSTANCE_SETTINGS.match(name) and name not in wanted)
    others = sorted({match.group(1) for name in names.values() if (match := TEMPLATE_UNIT.match(name))} - {engine})
    paths = [f"{config_dir}/{name}" for name in instances]
    if others:
        theirs = "|".join(re.escape(other) for other in others)
        owned = re.compile(
            rf"{re.escape(config_dir)}/({theirs})[-.]|/etc/systemd/system/inference-({theirs})@\.service\Z"
        )
        paths += [path for path in found_paths if owned.match(path)]
        paths += [f"{engines_dir}/{other}/start_server.sh" for other in others]
    return {"instances": instances, "paths": list(dict.fromkeys(paths))}


class FilterModule:
    def filters(self):
        return {
            "inference_engine_options": inference_engine_options,
            "inference_engine_list_options": inference_engine_list_options,
            "inference_engine_command_line": inference_engine_command_line,
            "inference_engine_stale": inference_engine_stale,
        }
