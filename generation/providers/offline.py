"""The offline engine: real PNG portraits rendered with Pillow, so the studio works with no key.

Renders are deterministic from (prompt, seed, batch index): the prompt picks the palette, hair,
eyes and backdrop, the seed and index vary pose and details. Image-to-image is real: the output
moves from the reference toward the prompt's rendering by the denoise strength, so COPY
(denoise <= 0.05) is nearly the reference and MODIFY (0.5) visibly changes it.

It behaves like a queue provider: submit answers PENDING and the render is ready after the
configured latency, so the pipeline's polling path, progress and partial failure can all be
seen offline. Latency and failure rate come from settings (OFFLINE_LATENCY_SECONDS,
OFFLINE_IMAGE_LATENCIES, OFFLINE_FAILURE_RATE) or, per job, from params["simulate"] (latency,
latencies, failure_rate, fail_indexes).

It also "trains" a LoRA (OfflineTrainer): a run of TRAINING_LATENCY_FACTOR latencies with progress,
yielding a small .safetensors file whose metadata holds an identity (hair, eyes, skin, outfit): the
colours its dataset's images agree on, the rest drawn from the trigger word. A generation given that
LoRA (request.loras) renders that identity whatever the prompt says, so a character keeps its
features across prompts, as a trained LoRA would.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import struct
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from PIL import Image, ImageDraw, ImageFilter

from generation.providers.base import (
    GeneratedImage,
    GenerationRequest,
    LoraWeight,
    Provider,
    ProviderResult,
    ResultStatus,
    TrainedLora,
    TrainingRequest,
)
from generation.providers.inputs import ensure_batch_fits
from generation.providers.training import TrainerSpec, validate_trainer_model

if TYPE_CHECKING:
    from models_registry.models import ApiModel

WIDTH, HEIGHT = 512, 640
MAX_IMAGES = 4
# A provider's latency includes making the image: the engine is polled this long before the
# image is due, renders it, and answers at the due moment, so its Pillow work (15-40 ms for x1-x4)
# is not counted as the pipeline's own.
RENDER_LEAD_SECONDS = 0.1
# A simulated training runs this many OFFLINE_LATENCY_SECONDS (10 s at the default 1 s): long
# enough to watch its progress, short enough to wait for.
TRAINING_LATENCY_FACTOR = 10
# How often a training's progress is worth asking for.
TRAINING_POLL_SECONDS = 2.0
LORA_FILE_NAME = "pytorch_lora_weights.safetensors"
_SKINS = [(241, 204, 178), (224, 172, 140), (190, 134, 98), (140, 92, 62), (96, 62, 44)]
REF2_WEIGHT = 0.35

# Words in the prompt that steer the rendering; anything else still changes it through the hash.
_HAIR = {
    "silver": (200, 204, 214),
    "white": (235, 235, 235),
    "blonde": (226, 196, 120),
    "gold": (214, 170, 60),
    "red": (170, 40, 35),
    "ginger": (196, 96, 40),
    "black": (28, 24, 26),
    "brown": (96, 62, 38),
    "blue": (60, 90, 200),
    "pink": (236, 130, 180),
    "green": (60, 150, 90),
    "purple": (120, 70, 170),
}
_EYES = {
    "red": (200, 30, 40),
    "blue": (40, 110, 220),
    "green": (40, 160, 80),
    "amber": (220, 150, 30),
    "violet": (140, 70, 200),
    "grey": (130, 130, 140),
    "brown": (110, 70, 40),
}
_SCENES = {
    "sunset": ((250, 150, 80), (120, 40, 90)),
    "night": ((20, 24, 60), (5, 5, 20)),
    "forest": ((60, 120, 70), (20, 50, 30)),
    "beach": ((120, 200, 240), (240, 220, 170)),
    "snow": ((230, 240, 250), (170, 190, 210)),
    "city": ((90, 100, 120), (30, 30, 45)),
    "studio": ((200, 200, 205), (120, 120, 130)),
}


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from the parts."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2**64


def fails(prompt: str, index: int, attempt: int, rate: float) -> bool:
    """Whether the simulated provider fails this image; stable per (prompt, index, attempt)."""
    return rate > 0 and _unit("fail", prompt, index, attempt) < rate


def _pick(table: dict[str, Any], words: list[str], rng: random.Random) -> Any:
    for word in words:
        if word in table:
            return table[word]
    return table[rng.choice(sorted(table))]


def identity_for(trigger_word: str) -> dict[str, list[int]]:
    """The features a simulated LoRA "learned": stable per trigger word (RGB lists, JSON-ready)."""
    rng = random.Random(_digest("lora", trigger_word))
    return {
        "hair": list(_HAIR[rng.choice(sorted(_HAIR))]),
        "eyes": list(_EYES[rng.choice(sorted(_EYES))]),
        "skin": list(rng.choice(_SKINS)),
        "outfit": [rng.randrange(30, 220) for _ in range(3)],
    }


# Where every offline portrait has its hair, skin and outfit, whatever its seed moves them
# (render_portrait's geometry): the points a simulated training looks at.
_FEATURE_POINTS = {"hair": (WIDTH // 2, 135), "skin": (WIDTH // 2, 283), "outfit": (WIDTH // 2, 600)}


def learn_identity(images: list[Image.Image], trigger_word: str) -> dict[str, list[int]]:
    """What a simulated training "learns" from its dataset: a feature's colour where most images
    agree on it at its point (a sheet made from one portrait agrees on the hair); what they do not
    agree on, and the eyes, stay as identity_for draws them from the trigger word."""
    identity = identity_for(trigger_word)
    for feature, point in _FEATURE_POINTS.items():
        colours = [image.convert("RGB").resize((WIDTH, HEIGHT)).getpixel(point) for image in images]
        bins = Counter(tuple(v // 32 for v in colour) for colour in colours)
        if not bins:
            continue
        best, count = bins.most_common(1)[0]
        if count * 2 > len(colours):
            agreeing = [c for c in colours if tuple(v // 32 for v in c) == best]
            identity[feature] = [round(sum(c[i] for c in agreeing) / len(agreeing)) for i in range(3)]
    return identity


def lora_file(trigger_word: str, steps: int, identity: dict[str, list[int]] | None = None) -> bytes:
    """A small, well-formed .safetensors file (8-byte header length, JSON header, tensor bytes) whose
    metadata carries the simulated identity."""
    weights = _digest("weights", trigger_word, steps)
    metadata = {"engine": "offline", "trigger_word": trigger_word, "steps": str(steps)}
    metadata["identity"] = json.dumps(identity or identity_for(trigger_word))
    tensor = {"dtype": "U8", "shape": [32], "data_offsets": [0, 32]}
    header = json.dumps({"__metadata__": metadata, "lora_unet.lora_down.weight": tensor}).encode()
    return struct.pack("<Q", len(header)) + header + weights


def lora_identity(lora: LoraWeight) -> dict[str, list[int]]:
    """The identity a simulated LoRA file carries, read from our storage (make run keeps media on
    disk); its trigger word's when the file cannot be read there (a URL on S3, say)."""
    try:
        with default_storage.open(lora.path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(size, 1 << 16)))
        return json.loads(header["__metadata__"]["identity"])
    except (OSError, ValueError, KeyError, TypeError, SuspiciousFileOperation, struct.error):
        return identity_for(lora.trigger_word)


def _dataset_images(dataset: str) -> list[Image.Image]:
    """The images of a dataset ZIP kept in our storage (dataset_url_for's name for this trainer)."""
    images = []
    try:
        with default_storage.open(dataset, "rb") as handle, zipfile.ZipFile(handle) as archive:
            for name in archive.namelist():
                if name.lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
                    with archive.open(name) as member:
                        image = Image.open(member)
                        image.load()
                        images.append(image)
    except (OSError, ValueError, SuspiciousFileOperation, zipfile.BadZipFile):
        return []
    return images


def _word_before(feature: str, words: list[str]) -> str | None:
    """The word written just before `feature` ("red" in "red hair"), skipping style words."""
    for position, word in enumerate(words):
        if word == feature:
            for earlier in reversed(words[:position]):
                if earlier not in {"long", "short", "wavy", "straight", "curly", "bright", "dark", "light"}:
                    return earlier
    return None


def _colour_of(feature: str, table: dict[str, Any], words: list[str]) -> Any:
    return table.get(_word_before(feature, words) or "")


def render_portrait(prompt: str, seed: int, index: int, identity: dict[str, list[int]] | None = None) -> Image.Image:
    """Draw one portrait. Same inputs, same pixels. `identity` (a LoRA's) fixes the hair, eyes, skin
    and outfit whatever the prompt says."""
    words = [w.strip(".,;:!?()").lower() for w in prompt.split()]
    prompt_rng = random.Random(_digest("prompt", prompt))
    rng = random.Random(_digest("variant", prompt, seed, index))

    top, bottom = _pick(_SCENES, words, prompt_rng)
    hair = _colour_of("hair", _HAIR, words) or _pick(_HAIR, words, prompt_rng)
    # "red hair and green eyes": each colour lands on the feature it is written before.
    eye_words = [w for w in words if w not in {_word_before("hair", words)} and (w != "red" or "eyes" in words)]
    eyes = _colour_of("eyes", _EYES, words) or _pick(_EYES, eye_words, prompt_rng)
    skin = prompt_rng.choice(_SKINS)
    outfit = (prompt_rng.randrange(30, 220), prompt_rng.randrange(30, 220), prompt_rng.randrange(30, 220))
    if identity:
        hair, eyes, skin, outfit = (tuple(identity[k]) for k in ("hair", "eyes", "skin", "outfit"))

    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    for y in range(0, HEIGHT, 4):  # vertical gradient backdrop in 4-pixel bands (fast, smooth enough)
        t = y / HEIGHT
        color = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.rectangle([0, y, WIDTH, y + 3], fill=color)
    for _ in range(18):  # backdrop bokeh: where the seed and index show most
        x, y, r = rng.randrange(WIDTH), rng.randrange(HEIGHT // 2), rng.randrange(8, 40)
        shade = tuple(min(255, c + rng.randrange(20, 70)) for c in top)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)

    cx = WIDTH // 2 + rng.randrange(-50, 51)
    tilt = rng.uniform(-0.12, 0.12)
    head_w, head_h = rng.randrange(150, 180), rng.randrange(190, 220)
    head_top = 150 + rng.randrange(-20, 21)
    # Shoulders and outfit.
    draw.ellipse([cx - 190, head_top + head_h + 20, cx + 190, HEIGHT + 260], fill=outfit)
    draw.rectangle([cx - 38, head_top + head_h - 20, cx + 38, head_top + head_h + 60], fill=skin)
    # Hair behind the head, the head, then a fringe.
    hair_len = rng.randrange(60, 260)
    draw.rounded_rectangle(
        [cx - head_w // 2 - 28, head_top - 30, cx + head_w // 2 + 28, head_top + head_h // 2 + hair_len],
        radius=80,
        fill=hair,
    )
    draw.ellipse([cx - head_w // 2, head_top, cx + head_w // 2, head_top + head_h], fill=skin)
    draw.chord(
        [cx - head_w // 2 - 10, head_top - 40, cx + head_w // 2 + 10, head_top + head_h // 2], 180, 360, fill=hair
    )
    # Eyes, brows, mouth, following the tilt.
    eye_y = head_top + int(head_h * 0.52)
    for side in (-1, 1):
        ex = cx + side * head_w // 5
        ey = eye_y + int(side * tilt * 40)
        draw.ellipse([ex - 16, ey - 9, ex + 16, ey + 9], fill=(250, 250, 250))
        draw.ellipse([ex - 8, ey - 8, ex + 8, ey + 8], fill=eyes)
        draw.ellipse([ex - 3, ey - 3, ex + 3, ey + 3], fill=(10, 10, 10))
        draw.line([ex - 18, ey - 22, ex + 18, ey - 22 - int(side * tilt * 30)], fill=hair, width=5)
    smile = rng.uniform(0.2, 1.0)
    mouth_y = head_top + int(head_h * 0.78)
    draw.arc(
        [cx - 28, mouth_y - int(14 * smile), cx + 28, mouth_y + int(14 * smile)], 10, 170, fill=(150, 60, 70), width=4
    )
    # A per-index accent (earring, flower, badge) so the four images of one job differ at a glance.
    ax, ay = cx + (head_w // 2 + 12) * (1 if index % 2 else -1), head_top + int(head_h * 0.7)
    accent = tuple(int(255 * _unit("accent", prompt, seed, index, k)) for k in range(3))
    draw.regular_polygon((ax, ay, 12 + 3 * index), n_sides=3 + index % 4, rotation=math.degrees(tilt), fill=accent)
    return image.filter(ImageFilter.SMOOTH)


def blend_toward(reference: Image.Image, rendering: Image.Image, denoise: float) -> Image.Image:
    """Image-to-image: start from the reference and move toward the rendering by `denoise`."""
    base = reference.convert("RGB").resize(rendering.size, Image.Resampling.BILINEAR)
    return Image.blend(base, rendering, max(0.0, min(1.0, denoise)))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Low compression: these are re-encoded on storage anyway, and speed matters more here.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class OfflineEngine(Provider):
    name = "offline"
    asynchronous = True
    max_images_limit: ClassVar[int] = MAX_IMAGES

    def _simulation(self, request: GenerationRequest) -> tuple[float, float, list[int]]:
        simulate = request.params.get("simulate") or {}
        latency = float(simulate.get("latency", settings.OFFLINE_LATENCY_SECONDS))
        per_image = [float(x) for x in simulate.get("latencies", settings.OFFLINE_IMAGE_LATENCIES)]
        if per_image:
            indexes = request.batch_indexes or list(range(request.num_images))
            latency = max(per_image[i] if i < len(per_image) else latency for i in indexes)
        rate = float(simulate.get("failure_rate", settings.OFFLINE_FAILURE_RATE))
        fail_indexes = [int(i) for i in simulate.get("fail_indexes", [])]
        return max(0.0, latency), max(0.0, min(1.0, rate)), fail_indexes

    def submit(self, request: GenerationRequest) -> ProviderResult:
        ensure_batch_fits(self.model, request)
        latency, _, _ = self._simulation(request)
        handles = {"ready_at": time.time() + latency}
        if latency == 0:
            return self._render(request)
        return ProviderResult(
            status=ResultStatus.PENDING,
            external_id=request.request_id,
            handles=handles,
            poll_after=max(0.0, latency - RENDER_LEAD_SECONDS),
        )

    def poll(self, request: GenerationRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:
        ready_at = float(handles.get("ready_at", 0))
        remaining = ready_at - time.time()
        if remaining > RENDER_LEAD_SECONDS:
            return ProviderResult(
                status=ResultStatus.PENDING,
                external_id=external_id,
                handles=handles,
                poll_after=remaining - RENDER_LEAD_SECONDS,
            )
        result = self._render(request)
        # Ready no earlier than the latency says, however quick the render was.
        time.sleep(max(0.0, ready_at - time.time()))
        return result

    def recover(self, request: GenerationRequest) -> ProviderResult | None:
        # The engine keeps no state: a request's id is our own request id, and rendering it is
        # deterministic, so a lost submit is found again by simply looking at it now.
        return self.poll(request, request.request_id, {"ready_at": 0})

    def _render(self, request: GenerationRequest) -> ProviderResult:
        _, rate, fail_indexes = self._simulation(request)
        attempt = int(request.params.get("attempt", 1))
        seed = request.seed if request.seed is not None else int(_unit("seed", request.request_id) * 2**31)
        reference = None
        if request.references:
            reference = Image.open(io.BytesIO(request.references[0].data))
            reference.load()
            if len(request.references) > 1:
                # A second reference counts too: a third of it goes into the starting image.
                second = Image.open(io.BytesIO(request.references[1].data))
                second.load()
                reference = blend_toward(reference, second.convert("RGB").resize(reference.size), REF2_WEIGHT)
        indexes = request.batch_indexes or list(range(request.num_images))
        # A LoRA's identity: what its simulated training learnt (lora_file).
        identity = lora_identity(request.loras[0]) if request.loras else None

        def make(index: int) -> GeneratedImage:
            if (index in fail_indexes and attempt == 1) or fails(request.prompt, index, attempt, rate):
                return GeneratedImage(error="The offline engine's simulated provider failed this image.")
            rendering = render_portrait(request.prompt, seed, index, identity)
            if reference is not None:
                denoise = 1.0 if request.denoise is None else request.denoise
                rendering = blend_toward(reference, rendering, denoise)
            return GeneratedImage(
                data=encode_png(rendering),
                content_type="image/png",
                seed=seed,
                width=rendering.width,
                height=rendering.height,
                metadata={"engine": "offline", "denoise": request.denoise},
            )

        # Pillow releases the GIL while filtering and encoding, so a native x4 renders in about
        # the time of x1 on a multi-core worker, as a real batched GPU would.
        with ThreadPoolExecutor(max_workers=min(4, len(indexes) or 1)) as pool:
            images = list(pool.map(make, indexes))
        return ProviderResult(status=ResultStatus.SUCCEEDED, images=images, external_id=request.request_id)


class OfflineTrainer(OfflineEngine):
    """A simulated LoRA training: progress over TRAINING_LATENCY_FACTOR latencies, then a small
    .safetensors file inline. Stateless like the engine: the handles hold the run's clock."""

    @classmethod
    def validate_model(cls, model: ApiModel) -> dict[str, str]:
        return validate_trainer_model(model)

    def _training_seconds(self, request: TrainingRequest) -> float:
        simulate = request.params.get("simulate") or {}
        seconds = simulate.get("latency", settings.OFFLINE_LATENCY_SECONDS * TRAINING_LATENCY_FACTOR)
        return max(0.0, float(seconds))

    def submit(self, request: TrainingRequest) -> ProviderResult:  # type: ignore[override]
        steps = TrainerSpec.of(self.model).steps_for(request.steps) or 0
        now = time.time()
        handles = {"started_at": now, "ready_at": now + self._training_seconds(request), "steps": steps}
        return self.poll(request, request.request_id, handles)

    def poll(self, request: TrainingRequest, external_id: str, handles: dict[str, Any]) -> ProviderResult:  # type: ignore[override]
        started, ready = float(handles.get("started_at", 0)), float(handles.get("ready_at", 0))
        remaining = ready - time.time()
        if remaining > 0:
            progress = max(0.0, min(1.0, 1 - remaining / (ready - started))) if ready > started else 0.0
            return ProviderResult(
                status=ResultStatus.PENDING,
                external_id=external_id,
                handles=handles,
                poll_after=min(remaining, TRAINING_POLL_SECONDS),
                progress=progress,
            )
        identity = learn_identity(_dataset_images(request.dataset_url), request.trigger_word)
        data = lora_file(request.trigger_word, int(handles.get("steps") or 0), identity)
        lora = TrainedLora(
            data=data, file_name=LORA_FILE_NAME, content_type="application/octet-stream", file_size=len(data)
        )
        return ProviderResult(
            status=ResultStatus.SUCCEEDED, external_id=external_id, handles=handles, progress=1.0, lora=lora
        )

    def recover(self, request: TrainingRequest) -> ProviderResult | None:  # type: ignore[override]
        # Nothing was kept but the run's clock, which was lost with the answer: the run is over.
        return self.poll(request, request.request_id, {"ready_at": 0})
