"""Vision embedding (ColQwen2): image decoding, fixed-size buckets, and the vision pipeline.

Images arrive as encoded bytes (PNG/JPEG/...), base64 / data-URI strings, or PIL images. They
are decoded and checked (corrupt, truncated, zero-pixel, over the pixel limit -> `ImageError`
with a one-line reason), then run through the Qwen2-VL image processor on its PIL backend, so
torchvision is never needed. Each image becomes one `VisionItem`; `collate` pads them into a
`Batch` that every engine feeds to the model unchanged. The image processor and its resize
budget live with the tokenizers (`engines.models.tokenizers`) and are re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from typing import Any

import numpy as np

from core.errors import ConfigError
from engines.models.specs import ModelSpec
from engines.models.tokenizers import MERGE_SIZE, PATCH_SIZE, PixelBudget, pil, smart_resize
from engines.pipeline import Batch, Prediction, to_numpy

log = logging.getLogger(__name__)

# decoded images above this many pixels are refused before they are resized (decompression bombs)
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
VISUAL_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
    "Describe the image.<|im_end|><|endoftext|>"
)


class ImageError(ConfigError):
    """An input is not a usable image; the message is the one-line reason a client gets."""

    status = 400  # HTTP status the server answers with


class ImageTooLarge(ImageError):
    status = 413


def image_bytes(data: Any) -> bytes:
    """Encoded image bytes from bytes, a base64 string or a `data:image/...;base64,` URI."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, str):
        raise ImageError(f"an image must be bytes or a base64 string, got {type(data).__name__}")
    s = data.strip()
    if s.startswith(("http://", "https://")):
        raise ImageError("image URLs are not fetched; send the image as base64 (data URI)")
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep or ";base64" not in head:
            raise ImageError("a data URI must look like data:image/png;base64,<data>")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image is not valid base64") from None
    if not raw:
        raise ImageError("image is empty (0 bytes)")
    return raw


def decode_image(data: Any, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """A checked RGB PIL image; ImageError names what is wrong with a bad one."""
    Image = pil()
    if isinstance(data, Image.Image):
        img = data
    else:
        raw = image_bytes(data)
        try:
            img = Image.open(io.BytesIO(raw))
        except Exception as e:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError ...
            why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            if "cannot identify image file" in why:  # PIL names its BytesIO object here
                why = "unknown format or a corrupt header"
            raise ImageError(f"not a decodable image ({len(raw)} bytes): {why}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"image has zero pixels ({w}x{h})")
    if w * h > max_image_pixels:
        raise ImageTooLarge(
            f"image is {w}x{h} = {w * h} pixels; the limit is {max_image_pixels} pixels"
        )
    try:
        img.load()  # a truncated file fails here, not at open()
        return img.convert("RGB") if img.mode != "RGB" else img
    except Exception as e:
        raise ImageError(
            f"image data is corrupt or truncated: {str(e).splitlines()[0][:120]}"
        ) from None


def synthetic_page(width: int = 600, height: int = 400, seed: int = 0):
    """A document-like RGB page: a heading, paragraphs of word-like strokes, a table or figure."""
    import random

    Image = pil()
    from PIL import ImageDraw

    rng = random.Random(seed)
    img = Image.new(
        "RGB", (width, height), (255, 255, 255) if rng.random() < 0.8 else (246, 242, 230)
    )
    d = ImageDraw.Draw(img)
    ink = (rng.randint(0, 60),) * 3
    margin = max(4, width // 16)
    y = max(4, height // 20)
    line = max(6, height // 40)
    words = ("the", "report", "total", "figure", "2024", "revenue", "section", "data")
    # heading
    x = margin
    for _ in range(rng.randint(2, 5)):
        w = rng.randint(width // 12, width // 5)
        if x + w > width - margin:
            break
        d.rectangle((x, y, x + w, y + 2 * line), fill=(20, 20, 90))
        x += w + line
    y += 4 * line
    while y < height - margin:
        kind = rng.random()
        if kind < 0.15 and y + height // 4 < height - margin:  # a table
            rows, cols = rng.randint(3, 6), rng.randint(2, 5)
            th = min(height // 4, rows * 2 * line)
            for r in range(rows + 1):
                yy = y + r * th // rows
                d.line((margin, yy, width - margin, yy), fill=ink)
            for c in range(cols + 1):
                xx = margin + c * (width - 2 * margin) // cols
                d.line((xx, y, xx, y + th), fill=ink)
            y += th + 2 * line
        elif kind < 0.25 and y + height // 4 < height - margin:  # a figure
            fh = height // 5
            shade = tuple(rng.randint(120, 230) for _ in range(3))
            d.rectangle((margin, y, margin + (width - 2 * margin) // 2, y + fh), fill=shade)
            y += fh + 2 * line
        else:  # a paragraph of word-like strokes, some real words
            for _ in range(rng.randint(2, 6)):
                x = margin
                while x < width - margin - 10:
                    w = rng.randint(line, 6 * line)
                    if rng.random() < 0.2:
                        d.text((x, y), rng.choice(words), fill=ink)
                    else:
                        d.rectangle(
                            (x, y + line // 4, min(x + w, width - margin), y + line), fill=ink
                        )
                    x += w + line // 2 + 2
                y += 2 * line
                if y >= height - margin:
                    break
            y += line
    return img


def encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# --------------------------------------------------------------------------- processor


def set_budget(processor: Any, budget: PixelBudget) -> None:
    ip = processor.image_processor
    ip.size = {"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels}
    for name, value in (("min_pixels", budget.min_pixels), ("max_pixels", budget.max_pixels)):
        if hasattr(ip, name):
            setattr(ip, name, value)


# --------------------------------------------------------------------------- fixed-size buckets

# (batch, grid height, grid width): grids count 14-pixel patches; t is 1 for images
VisionBucket = tuple[int, int, int]


def image_grid(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    """(grid height, grid width) in patches of an image of this size under `budget`."""
    h, w = smart_resize(height, width, budget.min_pixels, budget.max_pixels)
    return h // PATCH_SIZE, w // PATCH_SIZE


def bucket_pixels(grid_h: int, grid_w: int) -> tuple[int, int]:
    """(width, height) of an image that the processor keeps at exactly this grid."""
    return grid_w * PATCH_SIZE, grid_h * PATCH_SIZE


def bucket_name(bucket: VisionBucket) -> str:
    """b{batch}-{grid H}x{grid W}, the bucket's folder in an ONNX artifact."""
    b, gh, gw = bucket
    return f"b{b}-{gh}x{gw}"


def check_bucket(bucket: VisionBucket) -> VisionBucket:
    b, gh, gw = (int(x) for x in bucket)
    if b < 1 or gh < MERGE_SIZE or gw < MERGE_SIZE or gh % MERGE_SIZE or gw % MERGE_SIZE:
        raise ConfigError(
            f"image bucket {b}:{gh}x{gw} is invalid: batch >= 1 and grid sides even and >= "
            f"{MERGE_SIZE} (in {PATCH_SIZE}-pixel patches)"
        )
    return b, gh, gw


def describe_buckets(buckets) -> str:
    """'batch 1 x 588x392 px (grid 28x42), ...' for messages and the manifest."""
    parts = []
    for b, gh, gw in buckets:
        w, h = bucket_pixels(gh, gw)
        parts.append(f"batch {b} x {w}x{h} px (grid {gh}x{gw})")
    return ", ".join(parts)


def budget_for_buckets(buckets) -> PixelBudget:
    """A resize budget that keeps every bucket's exact-size image unchanged."""
    d = PixelBudget()
    px = [gh * gw * PATCH_SIZE**2 for _, gh, gw in buckets] or [d.max_pixels]
    return PixelBudget(min(d.min_pixels, min(px)), max(d.max_pixels, max(px)))


# --------------------------------------------------------------------------- pipeline


def _np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


class VisionItem:
    """One processed image: its token ids (prompt with expanded image pads) and patches."""

    __slots__ = ("ids", "patches", "grid", "pixels")

    def __init__(self, ids: np.ndarray, patches: np.ndarray, grid: np.ndarray, pixels: int):
        self.ids = ids
        self.patches = patches  # [n_patches, C * T * P * P] float32
        self.grid = grid  # [3]: t, h, w in patches
        self.pixels = pixels  # decoded (original) pixels

    def __len__(self) -> int:  # tokens, so the batcher's token budget works unchanged
        return int(self.ids.shape[0])

    @property
    def visual_tokens(self) -> int:
        return int(self.grid.prod()) // (MERGE_SIZE**2)


class VisionPipeline:
    """Decode -> Qwen2-VL processor -> (engine forward) -> per-image multi-vector output."""

    def __init__(
        self,
        spec: ModelSpec,
        processor: Any,
        budget: PixelBudget | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        self.spec = spec
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.budget = budget or PixelBudget()
        set_budget(processor, self.budget)
        self.max_image_pixels = int(max_image_pixels)
        self.image_token_id = int(processor.image_token_id)
        # a causal LM is not changed by right padding; pad with the tokenizer's pad (or eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
        # the largest sequence an image can produce under this budget, plus the prompt
        self.max_seq_len = self.budget.max_pixels // (PATCH_SIZE * MERGE_SIZE) ** 2 + 64

    @staticmethod
    def check_inputs(images: Any) -> None:
        if isinstance(images, (str, bytes)) or not isinstance(images, (list, tuple)):
            raise ConfigError("inputs must be a list of images")
        if not images:
            raise ConfigError("inputs must not be empty")

    def decode(self, images: list) -> list:
        return [decode_image(x, self.max_image_pixels) for x in images]

    def tokenize(self, images: list, *, truncate: bool = True) -> list[VisionItem]:
        """Decode and process each image on its own (thread-safe: no shared mutable state).
        `truncate` does not apply: the resize budget bounds an image's tokens."""
        self.check_inputs(images)
        out = []
        for i, raw in enumerate(images):
            img = decode_image(raw, self.max_image_pixels)
            try:
                # process_images: the API transformers' and colpali-engine's processors share
                enc = self.processor.process_images([img])
            except (ValueError, OSError) as e:
                raise ImageError(f"image {i} could not be processed: {e}") from None
            ids = _np(enc["input_ids"][0]).astype(np.int64)
            mask = _np(enc["attention_mask"][0]).astype(bool)
            grid = _np(enc["image_grid_thw"][0]).astype(np.int64)
            n = int(grid.prod())
            patches = _np(enc["pixel_values"][0]).astype(np.float32)[:n]
            out.append(VisionItem(ids[mask], patches, grid, img.size[0] * img.size[1]))
        return out

    def collate(self, items: list[VisionItem], images: list) -> Batch:
        if len(items) != len(images):
            raise ConfigError(f"collate got {len(items)} processed images for {len(images)}")
        if not items:
            raise ConfigError("inputs must not be empty")
        width = max(len(x) for x in items)
        n_patch = max(x.patches.shape[0] for x in items)
        b = len(items)
        ids = np.full((b, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        pv = np.zeros((b, n_patch, items[0].patches.shape[1]), dtype=np.float32)
        for i, x in enumerate(items):
            ids[i, : len(x)] = x.ids
            mask[i, : len(x)] = 1
            pv[i, : x.patches.shape[0]] = x.patches
        grid = np.stack([x.grid for x in items])
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            "pixel_values": pv,
            "image_grid_thw": grid,
        }
        batch = Batch(list(images), inputs, mask.sum(axis=1), 0)
        batch.pixels = np.asarray([x.pixels for x in items], dtype=np.int64)
        batch.visual_tokens = np.asarray([x.visual_tokens for x in items], dtype=np.int64)
        return batch

    def preprocess(self, images: list) -> Batch:
        return self.collate(self.tokenize(images), images)

    def postprocess(self, outputs: Any, batch: Batch) -> Prediction:
        """Keep each image's real vectors (attention mask), front-aligned, with their counts."""
        x = to_numpy(outputs)
        mask = batch.inputs["attention_mask"][:, : x.shape[1]].astype(bool)
        lengths = mask.sum(axis=1)
        out = np.zeros((x.shape[0], int(lengths.max()), x.shape[2]), dtype=np.float32)
        for i in range(x.shape[0]):
            out[i, : lengths[i]] = x[i][mask[i]]
        if self.spec.normalize:  # the model normalises already; fp16/bf16 rounding is undone here
            n = np.linalg.norm(out, axis=-1, keepdims=True)
            out = np.where(n > 0, out / np.maximum(n, 1e-12), out)
        return Prediction(out, lengths=lengths.astype(np.int64))

    def warmup_inputs(self) -> list[list]:
        """One image: compile's graphs are dynamic in image size from the first call, while
        the vision tower's Python loop over images recompiles once per new batch size."""
        return [[encode_png(synthetic_page(224, 168, seed=1))]]
