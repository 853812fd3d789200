"""Cog predictor that always fails, for error-path tests."""
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, prompt: str = Input(description="Ignored", default="")) -> str:
        print("about to fail")
        raise Exception("runbase-test: predictor failed on purpose")
