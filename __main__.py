"""nvidia-installer: `pulumi up -s <stack>` entry point. Validates the whole stack config first, then
registers the resources (components/program.py) and exports per-target outputs."""

import pulumi

from components import program
from components.cluster_nodes import report_uncovered_gpu_nodes
from components.config_errors import ConfigError
from components.config_source import load_stack_config

# The contract of Pulumi's Python runner (pulumi-language-python-exec, in the Pulumi SDK): a program that
# exits with 32 has already shown the user an actionable message, so the engine prints nothing after it.
# (pulumi.RunError would add "an unhandled error occurred: Program exited with non-zero exit code: 1".)
EXIT_AFTER_USER_ACTIONABLE_MESSAGE = 32

try:
    CONFIG = load_stack_config()
except ConfigError as error:
    pulumi.log.error(str(error))
    raise SystemExit(EXIT_AFTER_USER_ACTIONABLE_MESSAGE) from None

# A GPU node that no target selects gets no driver: say so in the preview and update output, and on the
# node itself (program.run marks it).
COVERAGE = report_uncovered_gpu_nodes(CONFIG)

for key, value in program.run(CONFIG, COVERAGE.uncovered).items():
    pulumi.export(key, value)
if COVERAGE.uncovered:
    pulumi.export("uncoveredGpuNodes", COVERAGE.uncovered)
