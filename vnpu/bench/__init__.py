"""`vnpu bench`: every component's speed as ratios measured in one run, and fidelity figures checked
against their bounds (docs/validation.md). Wall-clock figures are printed, never asserted."""
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
