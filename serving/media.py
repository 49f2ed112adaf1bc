"""From API messages to engine input: fetch or decode every image under the caps, and add OCR hints."""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from typing import Any

from PIL import Image

from assistant.errors import AssistantError
from assistant.images import ImageLimits, decode_image
from assistant.inference import normalize_messages
from serving.errors import EngineUnavailable, InvalidRequest
from serving.fetch import ImageFetcher, decode_data_url
from serving.metrics import Metrics
from serving.protocol import ChatMessage, ImagePart
from serving.settings import ServeSettings

log = logging.getLogger(__name__)


class OCRHints:
    """The OCR reader of `assistant.ocr`, built on first use; runs in worker threads (it blocks)."""

    def __init__(self, engine: str, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._reader: Any = None
        self._lock = threading.Lock()
        self._warned = False

    def _module(self) -> Any:
        try:
            return importlib.import_module("assistant.ocr")
        except ModuleNotFoundError as exc:
            if exc.name != "assistant.ocr":
                raise
            raise EngineUnavailable(
                "OCR is not installed on this server; send the request with ocr set to 'off'",
                code="ocr_unavailable",
            ) from exc

    def _get_reader(self) -> Any:
        with self._lock:
            if self._reader is None:
                self._reader = self._module().OCRReader(engine=self.engine)
            return self._reader

    def _hint(self, image: Image.Image, mode: str) -> str | None:
        try:
            reader = self._get_reader()
        except EngineUnavailable:
            if mode == "on":
                raise
            if not self._warned:
                log.warning("ocr=auto but assistant.ocr is not installed; answering without OCR hints")
                self._warned = True
            return None
        if mode == "auto" and not reader.has_text(image):
            return None
        result = reader.read(image)
        self.metrics.ocr_seconds.observe(result.seconds)
        return self._module().format_hint(result) if result.text.strip() else None

    async def hint(self, image: Image.Image, mode: str) -> str | None:
        return await asyncio.to_thread(self._hint, image, mode)

    def insert(self, parts: list[dict[str, Any]], hint: str) -> list[dict[str, Any]]:
        """The parts with the hint placed where the model was trained to read it (`assistant.ocr.insert_hint`)."""
        return self._module().insert_hint(parts, hint)


class MessageBuilder:
    """Turns request messages into (messages with image slots, images) for `normalize_messages` and the engines."""

    def __init__(
        self, settings: ServeSettings, fetcher: ImageFetcher, ocr: OCRHints, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.ocr = ocr
        self.metrics = metrics
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            min_side=settings.min_image_side,
            max_side=settings.max_image_side,
        )

    async def build(
        self, messages: list[ChatMessage], ocr_mode: str
    ) -> tuple[list[dict[str, Any]], list[Image.Image], str]:
        """Engine messages, their images in slot order, and the OCR text given to the model ("" if none)."""
        urls = [
            p.image_url.url
            for m in messages
            if isinstance(m.content, list)
            for p in m.content
            if isinstance(p, ImagePart)
        ]
        if len(urls) > self.settings.max_images:
            raise InvalidRequest(
                f"the request has {len(urls)} images, over the limit of {self.settings.max_images}; send fewer",
                param="messages",
                code="too_many_images",
            )
        images = list(await asyncio.gather(*(self._load(url) for url in urls)))
        self.metrics.images.inc(len(images))
        out, cursor, ocr_texts = [], 0, []
        for i, message in enumerate(messages):
            role = "system" if message.role == "developer" else message.role
            parts: list[dict[str, Any]] = []
            if isinstance(message.content, list):
                for part in message.content:
                    if isinstance(part, ImagePart):
                        if role != "user":
                            raise InvalidRequest(
                                f"messages[{i}] is a {role} message with an image; put images in user messages",
                                param=f"messages[{i}].content",
                            )
                        parts.append({"type": "image"})
                    else:
                        parts.append({"type": "text", "text": part.text})
            else:
                parts.append({"type": "text", "text": message.content or ""})
            count = sum(p["type"] == "image" for p in parts)
            if count and ocr_mode != "off":
                hints = [await self.ocr.hint(img, ocr_mode) for img in images[cursor : cursor + count]]
                hint_text = "\n".join(h.strip() for h in hints if h)
                if hint_text:
                    ocr_texts.append(hint_text)
                    parts = self.ocr.insert(parts, hint_text)
            cursor += count
            out.append({"role": role, "content": parts})
        try:
            normalized, _ = normalize_messages(out, images)  # roles, parts and the literal-<image> escape
        except AssistantError as exc:
            raise InvalidRequest(str(exc), param="messages") from exc
        return normalized, images, "\n".join(ocr_texts)

    async def _load(self, url: str) -> Image.Image:
        if url.startswith("data:"):
            data = decode_data_url(url, self.settings.max_image_bytes)
        else:
            data = await self.fetcher.fetch(url)
        try:
            return await asyncio.to_thread(decode_image, data, self.limits)
        except AssistantError as exc:
            raise InvalidRequest(str(exc), param="messages", code="invalid_image") from exc
