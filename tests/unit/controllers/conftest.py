"""The controller tests' `env` fixture and `eventually` live in tests/unit/conftest.py (shared
with the server tests); this re-exports them for the modules that import them from here."""

from tests.unit.conftest import ControllerEnv, eventually, real_env

__all__ = ["ControllerEnv", "eventually", "real_env"]
