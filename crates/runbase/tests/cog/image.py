"""Minimal Cog predictor returning a file: writes a tiny valid PNG (stdlib only)."""
import struct
import tempfile
import zlib

from cog import BasePredictor, Input, Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def make_png(width: int = 4, height: int = 4, rgb=(255, 0, 0)) -> bytes:
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


class Predictor(BasePredictor):
    def predict(self, prompt: str = Input(description="Ignored except for logging")) -> Path:
        print(f"image predictor prompt={prompt!r}")
        out = Path(tempfile.mkdtemp()) / "out.png"
        out.write_bytes(make_png())
        return out
