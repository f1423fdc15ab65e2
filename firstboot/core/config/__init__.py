"""The appliance config: a typed model of appliance.yaml, its loader and its docs.

appliance = load_config(path)          # raises ConfigInvalid (exit code 2)
password = appliance.secret(appliance.backup.passphrase)
"""

from firstboot.core.config.loader import DEFAULT_CONFIG_PATH, config_digest, load_config
from firstboot.core.config.model import Appliance
from firstboot.core.config.problems import ConfigInvalid, Problem, format_problems, format_warnings
from firstboot.core.config.schema_docs import render_config_docs, render_schema_json
from firstboot.core.config.secrets import SecretRef, SecretUnavailable

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Appliance",
    "ConfigInvalid",
    "Problem",
    "SecretRef",
    "SecretUnavailable",
    "config_digest",
    "format_problems",
    "format_warnings",
    "load_config",
    "render_config_docs",
    "render_schema_json",
]
