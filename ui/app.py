"""The chat page: a Gradio Blocks app that is only a client of the API (it never loads a model).

demo = build_ui(ChatClient(ClientConfig(base_url="http://127.0.0.1:8000/v1")))
demo.launch()   # or ui.mount.mount_ui(app, client) to serve it at /ui of the API server
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import gradio as gr

from ui.client import OCR_MODES, ChatClient, ChatError, ChatOptions, Turn
from ui.conversation import to_chatbot, user_turn
from ui.examples import example_inputs

log = logging.getLogger(__name__)

OCR_HELP = "off: never; auto: when the server sees text in an image; on: always read the images' text."
PLACEHOLDER = "Ask about your images. Attach them with the clip, drag and drop, or paste."
CONCURRENCY = 32  # answers streamed at once per page server; the API server queues and batches them


def build_ui(
    client: ChatClient, title: str = "LLaVA assistant", defaults: ChatOptions | None = None
) -> gr.Blocks:
    """The chat page for `client`: images and questions in, streamed answers out, history sent with each turn."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    defaults = defaults or ChatOptions()
    model = f"**{client.config.model}**" if client.config.model else "the model"

    def add_turn(message: dict[str, Any] | None, turns: list[Turn]) -> tuple[Any, ...]:
        turn = user_turn(message)
        if turn is None:
            raise gr.Error("Type a question or attach an image first.", print_exception=False)
        turns = [*turns, turn]
        return turns, to_chatbot(turns), gr.MultimodalTextbox(value=None, interactive=False)

    async def respond(
        turns: list[Turn], temperature: float, max_tokens: float, ocr: str
    ) -> AsyncIterator[tuple[list[Turn], list[dict[str, Any]]]]:
        if not turns or turns[-1].role != "user":
            return
        history, answer = list(turns), Turn("assistant")
        yield [*history, answer], to_chatbot([*history, answer], streaming=True)
        try:
            options = ChatOptions(temperature=float(temperature), max_tokens=int(max_tokens), ocr=ocr)
            async for event in client.stream(history, options):
                answer = replace(
                    answer, text=answer.text + event.text, ocr_text=event.ocr_text or answer.ocr_text
                )
                yield [*history, answer], to_chatbot([*history, answer], streaming=True)
        except (ChatError, ValueError) as exc:
            history[-1] = replace(history[-1], failed=True)  # a refused question is not sent again
            answer = replace(answer, error=str(exc), failed=True)
        except Exception:  # a bug here must not end the page; the log has the details
            log.exception("the chat page failed while answering")
            history[-1] = replace(history[-1], failed=True)
            answer = replace(answer, error="the chat page failed on this question; see its log", failed=True)
        yield [*history, answer], to_chatbot([*history, answer])

    def unlock() -> Any:
        return gr.MultimodalTextbox(interactive=True)

    def clear() -> tuple[Any, ...]:
        return [], [], gr.MultimodalTextbox(value=None, interactive=True)

    with gr.Blocks(title=title, analytics_enabled=False, fill_height=True) as demo:
        turns = gr.State([])
        gr.Markdown(f"## {title}\nChat with {model} served at `{client.config.base_url}`.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Conversation",
                    elem_id="chat",
                    height=520,
                    buttons=["copy"],
                    feedback_options=None,
                    placeholder="Attach one or more images, ask a question, and the answer streams in here.",
                )
                box = gr.MultimodalTextbox(
                    elem_id="message",
                    file_types=["image"],
                    file_count="multiple",
                    sources=["upload"],
                    placeholder=PLACEHOLDER,
                    show_label=False,
                    autofocus=True,
                )
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    clear_button = gr.Button("Clear conversation", elem_id="clear")
            with gr.Column(scale=1, min_width=220):
                with gr.Accordion("Settings", open=True):
                    temperature = gr.Slider(
                        0.0,
                        2.0,
                        value=defaults.temperature,
                        step=0.05,
                        label="Temperature",
                        elem_id="temperature",
                    )
                    max_tokens = gr.Slider(
                        1, 2048, value=defaults.max_tokens, step=1, label="Max tokens", elem_id="max-tokens"
                    )
                    ocr = gr.Radio(
                        list(OCR_MODES), value=defaults.ocr, label="OCR", info=OCR_HELP, elem_id="ocr"
                    )
        gr.Examples(example_inputs(), inputs=[box], label="Examples: toy-world scenes", examples_per_page=6)

        sent = box.submit(
            add_turn, [box, turns], [turns, chatbot, box], queue=False, api_visibility="private"
        )
        answer = sent.success(
            respond,
            [turns, temperature, max_tokens, ocr],
            [turns, chatbot],
            concurrency_limit=CONCURRENCY,
            api_visibility="private",
        )
        answer.then(unlock, None, box, queue=False, api_visibility="private")
        stop.click(unlock, None, box, cancels=[answer], queue=False, api_visibility="private")
        for cleared in (clear_button.click, chatbot.clear):  # the button and the Chatbot's own trash icon
            cleared(
                clear, None, [turns, chatbot, box], cancels=[answer], queue=False, api_visibility="private"
            )
    return demo
