"""A Gradio page for asking a checkpoint about an image and/or a sound, served on 127.0.0.1.

    mmr1 demo --checkpoint runs/tiny [--port 7860]

The reasoning streams into `#reasoning` as it is generated; the answer appears highlighted
in `#answer`. Bad input (a file too large, a question over the limit, an image or sound
that does not decode) is reported in `#message`, and the server keeps serving.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from mmr1.inference import QAPipeline

MAX_FILE_SIZE = "20mb"  # larger uploads are refused by Gradio before they reach the model


def build(qa: QAPipeline, max_new_tokens: int = 128):
    """The gr.Blocks app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_ask(image: Optional[str], audio, question: str):
        yield from respond(qa, image, audio, question, max_new_tokens)

    with gr.Blocks(title="mmr1") as app:
        gr.Markdown("# mmr1 — ask about an image and a sound")
        with gr.Row():
            image = gr.Image(type="filepath", label="image", elem_id="image")
            audio = gr.Audio(type="numpy", sources=["upload"], label="audio", elem_id="audio")
        question = gr.Textbox(label="question", lines=2, elem_id="question")
        ask = gr.Button("Ask", variant="primary", elem_id="ask")
        message = gr.Markdown(elem_id="message")
        reasoning = gr.Textbox(label="reasoning", lines=6, interactive=False, elem_id="reasoning")
        answer = gr.HTML(elem_id="answer")
        ask.click(on_ask, [image, audio, question], [reasoning, answer, message])
    return app


def respond(qa: QAPipeline, image: Optional[str], audio, question: str,
            max_new_tokens: int) -> Iterator[tuple[str, str, str]]:
    """(reasoning so far, answer HTML, message) after every generated piece; bad input → only a message."""
    try:
        wave, rate = _wave(audio)
        text = ""
        for piece in qa.stream(question or "", image=image, audio=wave, sample_rate=rate,
                               max_new_tokens=max_new_tokens):
            text += piece
            yield _reasoning(text), "", ""
        yield _reasoning(text), _answer_html(text), ""
    except (ValueError, FileNotFoundError) as e:
        yield "", "", f"**Cannot answer:** {html.escape(str(e))}"


def serve(checkpoint: Union[str, Path], config: Union[str, Path, None] = None, port: int = 7860,
          max_new_tokens: int = 128, block: bool = True):
    """Load a checkpoint and serve the page on 127.0.0.1:port (returns the app when block is False)."""
    from mmr1.inference import load

    app = build(load(checkpoint, config), max_new_tokens)
    app.queue().launch(server_name="127.0.0.1", server_port=port, max_file_size=MAX_FILE_SIZE,
                       prevent_thread_lock=not block, show_error=True)
    return app


def _wave(audio) -> tuple[Optional[np.ndarray], Optional[int]]:
    """Gradio's (rate, int16/int32/float array [N] or [N, C]) → (float32 samples, rate)."""
    if audio is None:
        return None, None
    rate, samples = audio
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / np.iinfo(samples.dtype).max
    return samples.astype(np.float32), int(rate)


def _reasoning(text: str) -> str:
    """The reasoning so far: after <think>, up to </think> once it is written."""
    return text.split("<think>", 1)[-1].split("</think>", 1)[0].strip()


def _answer_html(text: str) -> str:
    from mmr1.datamodules.prompt import parse_response

    _, answer = parse_response(text)
    shown = html.escape(answer) if answer is not None else "(no &lt;answer&gt; in the response)"
    return f'<div class="mmr1-answer"><mark><strong>{shown}</strong></mark></div>'
