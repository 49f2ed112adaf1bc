"""OCR hints through the API: `ocr` on adds the text read from the image to the user turn; auto skips images
without text; off never reads."""

from __future__ import annotations

import json
import re

import httpx
from PIL import Image, ImageDraw, ImageFont

from tests.serving.conftest import API_KEY, data_url, png_bytes, running_server, server_settings


def text_image() -> Image.Image:
    image = Image.new("RGB", (200, 60), (255, 255, 255))
    ImageDraw.Draw(image).text((10, 10), "HOTEL 42", fill=(0, 0, 0), font=ImageFont.load_default(size=32))
    return image


def test_ocr_modes(tiny_model_dir):
    # threads=2: an explicit setting reaches the engine core (the rule would choose 1 for this model)
    settings = server_settings(tiny_model_dir, ocr="auto", max_image_pixels=1_000_000, threads=2)
    with running_server(settings) as (url, _):
        headers = {"Authorization": f"Bearer {API_KEY}"}

        def complete(image: Image.Image, mode: str, stream: bool = False) -> httpx.Response:
            content = [
                {"type": "image_url", "image_url": {"url": data_url(png_bytes(image))}},
                {"type": "text", "text": "what does the sign say?"},
            ]
            body = {
                "model": tiny_model_dir.name,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 1,
            }
            response = httpx.post(
                url + "/v1/chat/completions",
                json={**body, "ocr": mode, "stream": stream},
                headers=headers,
                timeout=120,
            )
            assert response.status_code == 200, response.text
            return response

        def prompt_tokens(image: Image.Image, mode: str) -> int:
            return complete(image, mode).json()["usage"]["prompt_tokens"]

        sign, blank = text_image(), Image.new("RGB", (200, 60), (255, 255, 255))
        off = prompt_tokens(sign, "off")
        assert prompt_tokens(sign, "on") > off + 3  # the hint's words are in the prompt
        assert prompt_tokens(blank, "auto") == prompt_tokens(blank, "off")  # no text, no hint
        # the OCR text the model was given comes back beside the answer, and in the first chunk of a stream
        assert "HOTEL" in complete(sign, "on").json()["ocr_text"]
        assert complete(sign, "off").json().get("ocr_text") is None
        first_chunk = next(line for line in complete(sign, "on", stream=True).text.splitlines() if line)
        assert "HOTEL" in json.loads(first_chunk.removeprefix("data: "))["ocr_text"]
        metrics = httpx.get(url + "/metrics", headers=headers).text
        assert float(re.search(r"^assistant_ocr_seconds_count (\S+)$", metrics, re.M).group(1)) >= 1
        assert re.search(r"^assistant_engine_threads 2\.0$", metrics, re.M)
