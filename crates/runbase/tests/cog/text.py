"""Minimal Cog predictor: echoes the prompt back as a string."""
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.prefix = "echo: "

    def predict(self, prompt: str = Input(description="Text to echo")) -> str:
        print(f"text predictor got {len(prompt)} chars")
        return self.prefix + prompt
