"""The scanner of one `[secrets]` configuration, built at start and on reload."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aibridge.config import ConfigError, SecretsConfig
from aibridge.secrets.findings import OFF
from aibridge.secrets.rules import rule_set
from aibridge.secrets.scanner import Detector, Scanner, key_from_salt


@dataclass(frozen=True, eq=False)
class SecretsSetup:
    config: SecretsConfig
    key: bytes  # of the placeholders' hashes (from the salt, or this process's own)
    scanner: Scanner

    def describe(self) -> str:
        """The start-up line: what is scanned for, and what is done."""
        c = self.config
        own = len(c.rules)
        kinds = len({rule.id for rule in self.scanner.detector.rules})
        return (f"secret scanning: {kinds} kind(s) of secret ({own} of the operator's), "
                f"action {c.action}, {len(c.overrides)} override(s), {len(c.allow)} allowed "
                f"pattern(s); model output {'scanned' if c.responses else 'not scanned'}; "
                f"placeholders keyed {'by ' + c.salt_env if c.salt_env else 'per process'}")


def scanning(config: SecretsConfig) -> bool:
    """Whether any request can have an action other than `off`."""
    return (config.action != OFF or any(r.action not in (None, OFF) for r in config.rules)
            or any(o.action != OFF for o in config.overrides))


def build_secrets(config: SecretsConfig, environ: Mapping[str, str] | None = None,
                  previous: SecretsSetup | None = None) -> SecretsSetup | None:
    """The scanner, or None when scanning is off everywhere. A reload that changes neither
    the section nor the salt keeps `previous`, and with it the blocks it remembers. Raises
    ConfigError when `salt_env` names a variable that is not set."""
    if not scanning(config):
        return None
    env = os.environ if environ is None else environ
    salt = None
    if config.salt_env is not None:
        salt = env.get(config.salt_env)
        if not salt:
            raise ConfigError(f"secrets.salt_env: environment variable {config.salt_env} is "
                              "not set (or empty)")
    key = key_from_salt(salt)
    if previous is not None and previous.config == config and previous.key == key:
        return previous
    detector = Detector(rule_set(config.rules, entropy=config.entropy), config.allow,
                        examples=config.examples, key=key)
    return SecretsSetup(config, key, Scanner(detector, config.cache_entries))
