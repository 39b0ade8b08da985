"""The Gradio demo: bad inputs become a message; end to end in headless Debian chromium (Playwright): upload,
ask, read the answer.

The browser test needs `apt-get install -y chromium` and `pip install gradio playwright` (never
`playwright install`).
"""

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

pytest.importorskip("gradio", reason="gradio is not installed (pip install gradio)")


@pytest.fixture
def float_wav(tmp_path) -> Path:
    """One second of a 440 Hz tone as a 32-bit float WAV (what Gradio's own reader needed ffprobe for)."""
    path = tmp_path / "tone_float32.wav"
    t = np.arange(16000) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="FLOAT")
    return path


def test_bad_uploads_become_a_message(tiny_checkpoint, tmp_path, float_wav):
    from mmr1.demo import respond
    from mmr1.inference import load

    qa = load(tiny_checkpoint)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    last = list(respond(qa, str(broken), None, "How many?", 4))[-1]
    assert last[:2] == ("", "") and "cannot read image" in last[2]
    too_long = tmp_path / "long.wav"
    soundfile.write(too_long, np.zeros(8000 * 40, dtype=np.int16), 8000)  # 40 s > audio.max_seconds
    assert "max_seconds" in list(respond(qa, None, str(too_long), "How many?", 4))[-1][2]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    assert "cannot read audio" in list(respond(qa, None, str(corrupt), "How many?", 4))[-1][2]
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    assert "samples hold NaN or Inf" in list(respond(qa, None, str(nan), "How many?", 4))[-1][2]
    assert "expected a non-empty string" in list(respond(qa, None, None, "", 4))[-1][2]
    reasoning, answer, message = list(respond(qa, None, str(float_wav), "How many beeps?", 4))[-1]
    assert message == "" and "mmr1-answer" in answer  # a float32 WAV is read by soundfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def digit_png(tmp_path) -> Path:
    """A real handwritten digit (scikit-learn's load_digits), upscaled to 64×64, as PNG."""
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * (255 / 16)).astype(np.uint8)  # [8, 8]
    path = tmp_path / "digit.png"
    Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(path)
    return path


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found (apt-get install -y chromium)")
def test_upload_ask_and_read_the_answer(tiny_checkpoint, digit_png, float_wav, tmp_path, shared_data):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from mmr1.demo import serve

    recording = shared_data / "fsdd" / "recordings" / "0_george_0.wav"
    port = _free_port()
    app = serve(tiny_checkpoint, port=port, max_new_tokens=12, block=False)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#image input[type=file]", str(digit_png))
            page.set_input_files("#audio input[type=file]", str(recording))
            page.wait_for_selector("#image img", timeout=30_000)
            page.wait_for_selector("#audio audio, #audio #waveform, #audio .waveform-container", timeout=30_000,
                                   state="attached")
            page.fill("#question textarea", "Which digit is written, and which is spoken?")
            page.click("#ask")
            page.wait_for_selector("#answer .mmr1-answer mark", timeout=60_000)
            assert page.input_value("#reasoning textarea") != ""

            page.fill("#question textarea", "word " * 400)  # over the 256-token limit
            page.click("#ask")
            page.wait_for_function("document.querySelector('#message').innerText.includes('limit')", timeout=30_000)

            page.fill("#question textarea", "How many?")  # the server keeps serving
            page.click("#ask")
            page.wait_for_function("document.querySelector('#message').innerText.trim() === ''", timeout=60_000)
            page.wait_for_selector("#answer .mmr1-answer mark", timeout=60_000)

            page.reload()  # a 32-bit float WAV: read by soundfile, no ffprobe
            page.set_input_files("#audio input[type=file]", str(float_wav))
            page.wait_for_selector("#audio audio, #audio #waveform, #audio .waveform-container", timeout=30_000,
                                   state="attached")
            page.fill("#question textarea", "How many beeps?")
            page.click("#ask")
            page.wait_for_selector("#answer .mmr1-answer mark", timeout=60_000)
            assert page.inner_text("#message").strip() == ""

            page.reload()  # a corrupt image: the page's message area says so
            corrupt = tmp_path / "corrupt.png"
            corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
            page.set_input_files("#image input[type=file]", str(corrupt))
            page.fill("#question textarea", "How many shapes?")
            page.click("#ask")
            page.wait_for_function("document.querySelector('#message').innerText.includes('cannot read image')",
                                   timeout=30_000)
            browser.close()
    finally:
        app.close()
