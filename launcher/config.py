"""YAML configuration files for command-line programs: ``--config FILE`` whose keys are the
program's own options, with flags given on the command line winning over the file.

The one loader for every command of the project — ``launcher --config FILE`` (like horovodrun's
``--config-file``), ``ddp-bench``, the examples. The schema of a file is the program's
``argparse`` parser itself, so a file can hold exactly what the command line can:

- a key is an option's name, with ``-`` or ``_`` (``stall-seconds``, ``stall_seconds``, ``n``
  for ``-n``, ``nproc`` for ``--nproc``);
- its value has the option's type: an ``int`` option takes an integer, a ``float`` option a
  number (``1e-3`` is a number here, as in YAML 1.2), a flag ``true``/``false``, a comma list
  (``--ranks 1,2,4``) a YAML list or the same comma string, a choice one of the choices;
- an unknown key, a wrong type or a choice not offered is an error naming the key, the expected
  type and the file.

This module imports neither NumPy nor ddp: the launcher reads its file before BLAS loads.

Example:
    >>> import argparse, os, tempfile
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--epochs", type=int, default=10)
    >>> _ = p.add_argument("--lr", type=float, default=0.1)
    >>> add_config_argument(p)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("epochs: 3\\nlr: 1e-3\\n")
    >>> args = parse_args(p, ["--config", path, "--epochs", "5"])   # the flag wins
    >>> args.epochs, args.lr
    (5, 0.001)
"""
from __future__ import annotations

import argparse
import re

CONFIG_HELP = ("YAML file of option values (keys are the option names, e.g. 'epochs: 5'); "
               "options given on the command line override it")


class ConfigError(ValueError):
    """A configuration file that does not fit its program's options."""


class CommaList:
    """An argparse ``type`` for comma-separated values (``--ranks 1,2,4``) that a config file
    may also give as a YAML list.

    Example:
        >>> CommaList(int)("1,2,4")
        [1, 2, 4]
    """

    def __init__(self, item_type):
        self.item_type = item_type
        self.__name__ = f"list of {item_type.__name__}"  # argparse names the type in errors

    def __call__(self, text):
        if isinstance(text, (list, tuple)):
            return [self.item_type(v) for v in text]
        try:
            return [self.item_type(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {self.item_type.__name__}, got {text!r}")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--config FILE`` option (read by :func:`parse_args`)."""
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the values of ``--config FILE`` as defaults, so the
    command line overrides the file. With sub-commands, the file holds the options of the
    sub-command that was chosen. A bad file ends the program through ``parser.error`` (exit
    status 2) with the message of :class:`ConfigError`."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    target = _chosen_parser(parser, args)
    try:
        target.set_defaults(**check(load_yaml(path), target, path))
    except (ConfigError, OSError) as exc:
        target.error(str(exc))
    return parser.parse_args(argv)


def load_yaml(path: str) -> dict:
    """The mapping at the top of the YAML file ``path`` (an empty file is ``{}``).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "c.yaml")
        >>> with open(path, "w") as f:
        ...     _ = f.write("lr: 5e-4\\nsizes: [1, 2]\\n")
        >>> load_yaml(path)
        {'lr': 0.0005, 'sizes': [1, 2]}
    """
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency of ddp
        raise ConfigError(f"{path}: reading a config file needs PyYAML (pip install pyyaml)")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=_loader())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must hold a mapping of option names to values, "
                          f"not a {type(data).__name__}")
    return data


def check(values: dict, parser: argparse.ArgumentParser, path: str) -> dict:
    """``values`` (keys as written in the file) checked against ``parser``'s options and
    returned keyed by each option's ``dest``; raises :class:`ConfigError` naming the key and
    the file on an unknown key, a wrong type or a value outside the choices.

    Example:
        >>> p = argparse.ArgumentParser(); _ = p.add_argument("-n", "--nproc", type=int)
        >>> check({"n": 4}, p, "job.yaml")
        {'nproc': 4}
        >>> check({"n": "four"}, p, "job.yaml")
        Traceback (most recent call last):
        ...
        launcher.config.ConfigError: job.yaml: key 'n' must be int, got str ('four')
    """
    options = _options(parser)
    out = {}
    for key, value in values.items():
        action = options.get(_normal(str(key)))
        if action is None:
            known = ", ".join(sorted({a.dest for a in options.values()}))
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
        out[action.dest] = _checked_value(key, value, action, path)
    return out


# ------------------------------------------------------------------------------ internals

def _loader():
    """PyYAML's safe loader (plain data, never objects), reading ``1e-3`` as a number as YAML
    1.2 does (YAML 1.1 wants ``1.0e-3`` and PyYAML would hand the option the text "1e-3")."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def _options(parser):
    """Option name (dest and each long/short option string, ``-`` as ``_``) -> action."""
    names = {}
    for action in parser._actions:
        if (not action.option_strings or action.dest in ("help", "config")
                or action.help == argparse.SUPPRESS or isinstance(action, argparse._VersionAction)):
            continue
        names[_normal(action.dest)] = action
        for option in action.option_strings:
            names[_normal(option.lstrip("-"))] = action
    return names


def _normal(name):
    return name.replace("-", "_")


def _chosen_parser(parser, args):
    """The parser (the sub-command's, if any) that defined ``--config``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _chosen_parser(action.choices[chosen], args)
    return parser


def _checked_value(key, value, action, path):
    def wrong(expected):
        return ConfigError(f"{path}: key {key!r} must be {expected}, got "
                           f"{type(value).__name__} ({value!r})")

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise wrong("true or false")
        # the file says what the option's value is, whatever the flag's polarity
        return value
    kind = action.type
    if isinstance(kind, CommaList):
        if isinstance(value, str):
            try:
                value = kind(value)
            except (ValueError, argparse.ArgumentTypeError):
                raise wrong(kind.__name__) from None
        elif isinstance(value, list) and all(_is(v, kind.item_type) for v in value):
            value = [kind.item_type(v) for v in value]
        else:
            raise wrong(kind.__name__)
    elif kind in (int, float, str, None):
        kind = kind or str
        if not _is(value, kind):
            raise wrong(kind.__name__)
        value = float(value) if kind is float else value
    elif callable(kind):  # any other argparse type: it judges the text form
        try:
            value = kind(value if isinstance(value, str) else str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{path}: key {key!r}: {exc}") from None
    if action.choices is not None and not all(
            v in action.choices for v in (value if isinstance(value, list) else [value])):
        raise ConfigError(f"{path}: key {key!r} must be one of "
                          f"{', '.join(map(str, action.choices))}, got {value!r}")
    return value


def _is(value, kind):
    """Is ``value`` (from YAML) of the option type ``kind``? Integers count as floats; bools
    are not numbers here."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
