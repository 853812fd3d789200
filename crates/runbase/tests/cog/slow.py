"""Cog predictor that sleeps in small steps, for timeout and cancel tests."""
import time

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, seconds: float = Input(description="How long to sleep", default=30.0)) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return "done"
