"""A Microsoft Graph v1.0 + Entra ID simulator for Safekeep's tests, benchmarks and demo."""

from graphsim.simulator import DEFAULT_APP_ID, DEFAULT_APP_SECRET, Simulator
from graphsim.throttle import ThrottleConfig

__all__ = ["DEFAULT_APP_ID", "DEFAULT_APP_SECRET", "Simulator", "ThrottleConfig"]
