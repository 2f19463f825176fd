"""The policy pack's entry point: the Pulumi CLI runs it (`--policy-pack policy`). Constructing the
PolicyPack starts its gRPC server and never returns, so nothing may import this file; the rules live in
policy/rules.py, importable as `policy.rules` from the repository root."""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

# The pack runs from its own directory: put the repository root on the path for `policy.rules`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from policy.rules import POLICIES

PolicyPack(name="nvidia-installer", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
