"""A Gradio page for asking a checkpoint about an image and/or a sound, served on 127.0.0.1.

    mmr1 demo --checkpoint runs/tiny [--port 7860]

The reasoning streams into `#reasoning` as it is generated; the answer appears highlighted
in `#answer`. Uploads reach the handler as files (`preprocess=False`), so the package's own
readers decode them (Pillow, soundfile: no ffmpeg), and every bad input (a file too large,
a question over the limit, an image or sound that does not decode, NaN samples) is reported
in `#message` while the server keeps serving.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Iterator, Optional, Union

from mmr1.inference import QAPipeline

MAX_FILE_SIZE = "20mb"  # larger uploads are refused by Gradio before they reach the model


def build(qa: QAPipeline, max_new_tokens: int = 128):
    """The gr.Blocks app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_ask(image: Optional[dict], audio: Optional[dict], question: Optional[str]):
        yield from respond(qa, uploaded(image), uploaded(audio), question or "", max_new_tokens)

    with gr.Blocks(title="mmr1") as app:
        gr.Markdown("# mmr1 — ask about an image and a sound")
        with gr.Row():
            image = gr.Image(type="filepath", label="image", elem_id="image")
            audio = gr.Audio(type="filepath", sources=["upload"], label="audio", elem_id="audio")
        question = gr.Textbox(label="question", lines=2, elem_id="question")
        ask = gr.Button("Ask", variant="primary", elem_id="ask")
        message = gr.Markdown(elem_id="message")
        reasoning = gr.Textbox(label="reasoning", lines=6, interactive=False, elem_id="reasoning")
        answer = gr.HTML(elem_id="answer")
        # preprocess=False: Gradio would decode the files itself (audio through ffmpeg), and its
        # errors would bypass the message area
        ask.click(on_ask, [image, audio, question], [reasoning, answer, message], preprocess=False)
    return app


def uploaded(payload: Optional[dict]) -> Optional[str]:
    """The server-side path of an uploaded file (Gradio's FileData/ImageData payload), None when none."""
    return payload.get("path") if isinstance(payload, dict) else None


def respond(qa: QAPipeline, image: Optional[str], audio: Optional[str], question: str,
            max_new_tokens: int) -> Iterator[tuple[str, str, str]]:
    """(reasoning so far, answer HTML, message) after every generated piece; bad input → only a message.
    `image` and `audio` are file paths (or anything `qa` takes)."""
    try:
        text = ""
        for piece in qa.stream(question, image=image, audio=audio, max_new_tokens=max_new_tokens):
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


def _reasoning(text: str) -> str:
    """The reasoning so far: after <think>, up to </think> once it is written."""
    return text.split("<think>", 1)[-1].split("</think>", 1)[0].strip()


def _answer_html(text: str) -> str:
    from mmr1.datamodules.prompt import parse_response

    _, answer = parse_response(text)
    shown = html.escape(answer) if answer is not None else "(no &lt;answer&gt; in the response)"
    return f'<div class="mmr1-answer"><mark><strong>{shown}</strong></mark></div>'
