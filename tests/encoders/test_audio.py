"""AudioEncoder: real speech, exact lengths, SpecAugment, padding invariance, absent audio, resampling, checks."""

import pytest
import soundfile
import torch
import torchaudio

from mmr1.config import AudioConfig
from mmr1.encoders.audio import AudioEncoder, warp_frequencies

CFG = AudioConfig(sample_rate=16000, n_mels=40, n_fft=400, hop_length=160, width=32, depth=2, n_heads=2,
                  ffn_dim=64, conv_kernel=15, freq_mask=8, time_mask=20, max_seconds=5.0)


@pytest.fixture
def speech(shared_data) -> list[torch.Tensor]:
    """Three spoken digits from the Free Spoken Digit Dataset: 8 kHz mono float32 [S] each."""
    paths = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[:3]
    if len(paths) < 3:
        pytest.skip("fsdd recordings not found in the shared data folder")
    clips = []
    for path in paths:
        samples, rate = soundfile.read(path, dtype="float32")
        assert rate == 8000 and samples.ndim == 1
        clips.append(torch.from_numpy(samples))
    return clips


def pad_batch(clips: list[torch.Tensor], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad clips with zeros into waveform [B, S] and lengths [B]."""
    lengths = torch.tensor([len(c) for c in clips])
    waveform = torch.zeros(len(clips), int(lengths.max()) + extra)
    for row, clip in zip(waveform, clips):
        row[: len(clip)] = clip
    return waveform, lengths


def expected_tokens(samples_16k: int) -> int:
    """Tokens for a clip, by hand: centred STFT frames, then two kernel-3 stride-2 convolutions."""
    frames = samples_16k // 160 + 1
    return ((frames - 3) // 2 + 1 - 3) // 2 + 1


def test_forward_backward_on_real_speech(speech):
    torch.manual_seed(0)
    encoder = AudioEncoder(CFG).train()
    waveform, lengths = pad_batch(speech)

    out = encoder(waveform, lengths, sample_rate=8000)
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()

    assert encoder.width == 32
    assert out.tokens.shape == (3, expected_tokens(2 * waveform.shape[1]), 32)
    assert out.mask.sum(1).tolist() == [expected_tokens(2 * n) for n in lengths.tolist()]
    assert out.tokens.isfinite().all() and out.pooled.shape == (3, 32)
    for name in ("subsample.conv.0.weight", "conformer.conformer_layers.0.conv_module.sequential.2.weight",
                 "conformer.conformer_layers.1.ffn2.sequential.4.weight"):
        grad = encoder.get_parameter(name).grad
        assert grad is not None and grad.isfinite().all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("samples", [1, 159, 160, 961, 4768, 16000])
def test_length_formulas_match_torchaudio_and_the_convolutions(samples):
    encoder = AudioEncoder(CFG)
    waveform = torch.randn(1, samples)

    frames = encoder.frame_lengths(torch.tensor([samples]))
    tokens = encoder.subsample.output_lengths(frames)

    assert frames.item() == encoder.mel(waveform).shape[-1] == samples // 160 + 1
    if frames.item() >= 3:
        assert tokens.item() == encoder.subsample(torch.zeros(1, frames.item(), 40)).shape[1]
    assert tokens.item() == max(expected_tokens(samples), 0)
    assert encoder.frame_lengths(torch.tensor([0])).item() == 0


def test_masked_conformer_matches_torchaudio_without_padding(speech):
    encoder = AudioEncoder(CFG).eval()
    waveform, lengths = pad_batch(speech[:1])
    features, frame_lengths = encoder.log_mel(waveform, lengths, sample_rate=8000)

    with torch.no_grad():
        x = encoder.subsample(features)  # [1, T', D]
        expected, _ = encoder.conformer(x, torch.tensor([x.shape[1]]))
        out = encoder.forward_features(features, frame_lengths)

    torch.testing.assert_close(out.tokens, expected)


@pytest.mark.parametrize("freq_mask, time_mask, augmented", [(8, 20, True), (0, 0, False)])
def test_spec_augment_only_in_training(speech, freq_mask, time_mask, augmented):
    torch.manual_seed(0)
    encoder = AudioEncoder(AudioConfig(**{**vars(CFG), "freq_mask": freq_mask, "time_mask": time_mask}))
    waveform, lengths = pad_batch(speech)
    seen = []
    encoder.subsample.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    features, _ = encoder.log_mel(waveform, lengths, sample_rate=8000)

    encoder.train()(waveform, lengths, sample_rate=8000)
    encoder.eval()
    first, second = encoder(waveform, lengths, sample_rate=8000), encoder(waveform, lengths, sample_rate=8000)

    assert (not torch.equal(seen[0], features)) == augmented
    if augmented:
        assert ((seen[0] == 0) & (features != 0)).any()  # masked bands are set to 0, the utterance mean
    assert torch.equal(seen[1], features) and torch.equal(seen[2], features)
    assert torch.equal(first.tokens, second.tokens)


@pytest.mark.parametrize("alpha, peak", [(1.1, 40 / 1.1), (0.9, 40 / 0.9), (1.0, 40.0)])
def test_vtlp_moves_a_tone_below_the_knee_and_keeps_both_ends(alpha, peak):
    spectrogram = torch.rand(2, 201, 5)
    spectrogram[:, 40] = 100.0  # a tone at a fifth of Nyquist, below the knee (0.6 of Nyquist)

    warped = warp_frequencies(spectrogram, torch.tensor([alpha, 1.0]))  # [2, 201, 5]

    loud = (warped[0, :, 0] > 10).nonzero().flatten().tolist()
    assert loud == sorted({int(peak), int(-(-peak // 1))})  # the bins on either side of 40 / α
    torch.testing.assert_close(warped[1], spectrogram[1], rtol=1e-5, atol=1e-5)  # α = 1 changes nothing (to rounding)
    torch.testing.assert_close(warped[:, [0, -1]], spectrogram[:, [0, -1]], rtol=1e-5, atol=1e-5)  # 0 Hz and Nyquist stay put


def test_vtlp_warps_only_in_training(speech):
    torch.manual_seed(0)
    encoder = AudioEncoder(AudioConfig(**{**vars(CFG), "freq_mask": 0, "time_mask": 0, "vtlp": 0.1}))
    plain = AudioEncoder(AudioConfig(**{**vars(CFG), "freq_mask": 0, "time_mask": 0})).eval()
    waveform, lengths = pad_batch(speech)

    evaluated, frames = encoder.eval().log_mel(waveform, lengths, sample_rate=8000)
    first, _ = encoder.train().log_mel(waveform, lengths, sample_rate=8000)
    second, train_frames = encoder.log_mel(waveform, lengths, sample_rate=8000)

    torch.testing.assert_close(evaluated, plain.log_mel(waveform, lengths, sample_rate=8000)[0])
    assert torch.equal(frames, train_frames)
    assert not torch.allclose(first, evaluated, atol=1e-2) and not torch.allclose(first, second, atol=1e-2)
    with pytest.raises(ValueError, match="audio.vtlp"):
        AudioConfig(vtlp=0.5)


@pytest.mark.parametrize("padding", ["zeros", "noise"])
def test_padding_does_not_change_a_clip(speech, padding):
    torch.manual_seed(0)
    encoder = AudioEncoder(CFG).eval()
    clip, other = speech[0], speech[1]
    alone, alone_lengths = pad_batch([clip])
    batch, lengths = pad_batch([clip, other], extra=3000)  # clip is padded to the longer clip + 3000 samples
    if padding == "noise":
        batch[0, len(clip):] = torch.randn(batch.shape[1] - len(clip))

    with torch.no_grad():
        single = encoder(alone, alone_lengths, sample_rate=8000)
        padded = encoder(batch, lengths, sample_rate=8000)

    n = single.tokens.shape[1]
    assert padded.tokens.shape[1] > n and padded.mask[0].sum() == n
    torch.testing.assert_close(padded.tokens[0, :n], single.tokens[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(padded.pooled[0], single.pooled[0], atol=1e-4, rtol=1e-4)
    assert (padded.tokens[0, n:] == 0).all()


def test_absent_audio_gives_a_false_mask_row_and_finite_outputs(speech):
    encoder = AudioEncoder(CFG).train()
    waveform, _ = pad_batch(speech[:2])

    out = encoder(waveform, torch.tensor([len(speech[0]), 0]), sample_rate=8000)
    out.pooled.sum().backward()
    nothing = encoder.eval()(waveform, torch.tensor([0, 0]), sample_rate=8000)

    assert out.present.tolist() == [True, False]
    assert out.tokens.isfinite().all() and (out.tokens[1] == 0).all() and (out.pooled[1] == 0).all()
    assert all(p.grad.isfinite().all() for p in encoder.parameters() if p.grad is not None)
    assert not nothing.mask.any() and nothing.tokens.isfinite().all() and (nothing.pooled == 0).all()


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100])
def test_sample_rates_give_the_same_number_of_frames(speech, sample_rate):
    encoder = AudioEncoder(CFG).eval()
    clip = speech[0][: len(speech[0]) // 160 * 160]  # whole 20 ms steps, so every rate has whole samples
    resampled = torchaudio.functional.resample(clip[None], 8000, sample_rate)  # [1, S]
    samples_16k = len(clip) * 2
    assert resampled.shape[1] == len(clip) * sample_rate // 8000

    features, frame_lengths = encoder.log_mel(resampled, torch.tensor([resampled.shape[1]]), sample_rate)
    out = encoder(resampled, torch.tensor([resampled.shape[1]]), sample_rate)

    assert frame_lengths.item() == features.shape[1] == samples_16k // 160 + 1
    assert out.mask.sum().item() == out.tokens.shape[1] == expected_tokens(samples_16k)


@pytest.mark.parametrize("waveform, lengths, sample_rate, message", [
    (torch.zeros(16000), torch.tensor([16000]), None, r"waveform: expected float \[B, S\]"),
    (torch.zeros(1, 1, 16000), torch.tensor([16000]), None, r"waveform: expected float \[B, S\]"),
    (torch.zeros(1, 16000, dtype=torch.int16), torch.tensor([16000]), None, r"waveform: expected float \[B, S\]"),
    (torch.zeros(0, 16000), torch.zeros(0, dtype=torch.long), None, r"waveform: expected float \[B, S\] with B > 0"),
    (torch.zeros(1, 80001), torch.tensor([80001]), None, r"S <= 80000 \(5.0 s at 16000 Hz\)"),
    (torch.zeros(1, 40001), torch.tensor([40001]), 8000, r"S <= 40000 \(5.0 s at 8000 Hz\)"),
    (torch.zeros(1, 900), torch.tensor([900]), None, "waveform: 900 samples at 16000 Hz are too short"),
    (torch.zeros(2, 16000), torch.tensor([16000]), None, r"lengths: expected integer \[2\]"),
    (torch.zeros(2, 16000), torch.tensor([16000.0, 1.0]), None, r"lengths: expected integer \[2\]"),
    (torch.zeros(2, 16000), torch.tensor([16001, 5]), None, r"lengths: expected values in \[0, 16000\]"),
    (torch.zeros(2, 16000), torch.tensor([-1, 5]), None, r"lengths: expected values in \[0, 16000\]"),
    (torch.zeros(1, 16000), torch.tensor([16000]), 0, "sample_rate: must be positive"),
])
def test_bad_inputs_raise(waveform, lengths, sample_rate, message):
    encoder = AudioEncoder(CFG)
    with pytest.raises(ValueError, match=message):
        encoder(waveform, lengths, sample_rate)


def test_bad_features_raise():
    encoder = AudioEncoder(CFG)
    with pytest.raises(ValueError, match=r"features: expected \[B, T, 40\]"):
        encoder.forward_features(torch.zeros(1, 20, 80), torch.tensor([20]))
    with pytest.raises(ValueError, match=r"frame_lengths: expected \[1\] with values in \[0, 20\]"):
        encoder.forward_features(torch.zeros(1, 20, 40), torch.tensor([21]))


def test_a_frozen_copy_encodes_bit_for_bit_like_the_trainable_encoder():
    """MultiheadAttention takes a contiguous [T, B, D] input; a non-contiguous one is rounded differently
    when the weights need no grad, so a frozen reference copy (RL) would drift from its policy."""
    import copy

    torch.manual_seed(0)
    encoder = AudioEncoder(CFG).eval()
    frozen = copy.deepcopy(encoder).requires_grad_(False)
    waveform, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    with torch.no_grad():
        a = encoder(waveform, lengths, sample_rate=8000).tokens
        b = frozen(waveform, lengths, sample_rate=8000).tokens
    assert torch.equal(a, b)


def test_per_band_normalisation_removes_a_fixed_spectral_tilt(speech):
    """audio.normalize="mel" (CMVN): each band has mean 0 and std 1 over a clip's frames, and a fixed filter on
    the clip (a channel, a voice's tilt: an offset per band in log-mel) moves the features far less than with
    one mean/std per clip."""
    waveform, lengths = pad_batch(speech[:1])
    tilted = torchaudio.functional.lowpass_biquad(waveform, 8000, cutoff_freq=1000.0)  # [1, S]
    change = {}
    for normalize in ("utterance", "mel"):
        encoder = AudioEncoder(AudioConfig(**{**CFG.__dict__, "sample_rate": 8000, "n_fft": 200,
                                              "hop_length": 80, "normalize": normalize})).eval()
        features, frames = encoder.log_mel(waveform, lengths, 8000)  # [1, T, n_mels]
        if normalize == "mel":
            torch.testing.assert_close(features[0].mean(0), torch.zeros(CFG.n_mels), atol=1e-4, rtol=0)
            torch.testing.assert_close(features[0].std(0, unbiased=False), torch.ones(CFG.n_mels), atol=1e-3, rtol=0)
        change[normalize] = (encoder.log_mel(tilted, lengths, 8000)[0] - features).abs().mean().item()
    assert change["mel"] < 0.5 * change["utterance"], change
    with pytest.raises(ValueError, match="audio.normalize"):
        AudioConfig(normalize="cmvn")


def test_cepstral_smoothing_keeps_the_first_dct_coefficients_of_each_frame(speech):
    """audio.cepstra=K: each frame's log-mel loses every DCT coefficient past the K-th and keeps the first K
    (up to the per-clip scale of the normalisation); K = n_mels changes nothing."""
    waveform, lengths = pad_batch(speech)
    plain = AudioEncoder(CFG).eval()
    features, frames = plain.log_mel(waveform, lengths, 8000)  # [B, T, n_mels]
    dct = torchaudio.functional.create_dct(CFG.n_mels, CFG.n_mels, norm="ortho")  # [n_mels, n_mels] orthonormal

    every = AudioEncoder(AudioConfig(**{**vars(CFG), "cepstra": CFG.n_mels})).eval()
    torch.testing.assert_close(every.log_mel(waveform, lengths, 8000)[0], features, atol=1e-4, rtol=0)

    smooth, smooth_frames = AudioEncoder(AudioConfig(**{**vars(CFG), "cepstra": 13})).eval().log_mel(
        waveform, lengths, 8000)
    assert torch.equal(smooth_frames, frames)
    cepstra, plain_cepstra = smooth @ dct, features @ dct  # [B, T, n_mels] DCT coefficients of each frame
    assert cepstra[..., 13:].abs().max() < 1e-4
    assert plain_cepstra[..., 13:].abs().max() > 0.1  # there was fine structure to remove
    for clip, (kept, reference) in enumerate(zip(cepstra[..., :13], plain_cepstra[..., :13])):
        valid = slice(0, int(frames[clip]))
        ratio = kept[valid] / reference[valid]  # one positive scale per clip (the normalisation's std)
        big = reference[valid].abs() > 0.1
        torch.testing.assert_close(ratio[big], ratio[big].median().expand(int(big.sum())), atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="audio.cepstra"):
        AudioConfig(cepstra=41)
