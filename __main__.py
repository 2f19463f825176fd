"""nvidia-installer: `pulumi up -s <stack>` entry point. Validates the whole stack config first, then
registers the resources (components/program.py) and exports per-target outputs."""

import pulumi

from components import program
from components.config_errors import ConfigError
from components.config_source import load_stack_config

try:
    CONFIG = load_stack_config()
except ConfigError as error:
    # RunError is reported as a plain message, without a Python traceback.
    raise pulumi.RunError(str(error)) from None

for key, value in program.run(CONFIG).items():
    pulumi.export(key, value)
