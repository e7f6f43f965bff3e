"""load_audio: formats, channel layouts, resampling and every bad input's one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import soxr
import torch

from spiritlens.audio.waveform import Waveform, load_audio


def tone(n: int, rate: int = 16_000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)


def test_mono_16k_array_passes_through():
    x = tone(16_000)
    wave = load_audio(x)
    assert isinstance(wave, Waveform) and wave.sample_rate == 16_000 and wave.samples.dtype == np.float32
    assert np.array_equal(wave.samples, x) and wave.duration_s == 1.0


def test_stereo_layouts_average_to_mono():
    left, right = tone(8000), np.linspace(-1, 1, 8000, dtype=np.float32)
    expected = (left + right) / 2
    for data in (np.stack([left, right]), np.stack([left, right], axis=1), torch.from_numpy(np.stack([left, right]))):
        assert np.allclose(load_audio(data).samples, expected, atol=1e-7)


def test_resampling_uses_soxr_default_quality():
    x = tone(44_100, 44_100)
    wave = load_audio(x, sample_rate=44_100)
    assert wave.num_samples == 16_000
    assert np.array_equal(wave.samples, soxr.resample(x, 44_100, 16_000))


def test_int16_pcm_is_scaled():
    pcm = np.array([0, 16_384, -32_768], dtype=np.int16)
    assert load_audio(np.tile(pcm, 100)).samples[:3].tolist() == [0.0, 0.5, -1.0]


@pytest.mark.parametrize("fmt,subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_file_formats(tmp_path, fmt, subtype):
    path = tmp_path / f"a.{fmt}"
    soundfile.write(path, np.stack([tone(22_050, 22_050)] * 2, axis=1), 22_050, subtype=subtype)
    wave = load_audio(path)
    assert wave.sample_rate == 16_000 and abs(wave.num_samples - 16_000) <= 1 and wave.source == str(path)
    assert 0.2 < np.abs(wave.samples).max() < 0.6


def test_file_with_conflicting_sample_rate(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, tone(800), 16_000)
    with pytest.raises(ValueError, match=r"a\.wav: the file is at 16000 Hz but sample_rate=8000"):
        load_audio(path, sample_rate=8000)


# ---- bad input: one line, naming the input
def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_audio(tmp_path / "nope.wav")
    assert one_line(error) == f"{tmp_path / 'nope.wav'}: no such audio file"


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError) as error:
        load_audio(tmp_path / "empty.wav")
    assert one_line(error).endswith("empty.wav: the audio file is empty (0 bytes)")


def test_unreadable_file(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(ValueError) as error:
        load_audio(tmp_path / "junk.wav")
    assert "junk.wav: cannot read audio file (" in one_line(error)


def test_zero_frame_file(tmp_path):
    soundfile.write(tmp_path / "zero.wav", np.zeros((0, 1), dtype=np.float32), 16_000)
    with pytest.raises(ValueError) as error:
        load_audio(tmp_path / "zero.wav")
    assert one_line(error).endswith("zero.wav: the audio file has zero length (no samples)")


@pytest.mark.parametrize("data", [np.zeros(0, np.float32), np.zeros((2, 0), np.float32), torch.zeros(0)])
def test_zero_length_array(data):
    with pytest.raises(ValueError) as error:
        load_audio(data)
    assert "array of shape" in one_line(error) and one_line(error).endswith("the audio has zero length (no samples)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(bad):
    x = tone(1000)
    x[[10, 500]] = bad
    with pytest.raises(ValueError) as error:
        load_audio(x)
    assert one_line(error) == "<numpy array of shape [1000]>: the audio contains 2 NaN or infinite sample(s)"


def test_nan_in_file(tmp_path):
    x = tone(1000)
    x[3] = np.nan
    soundfile.write(tmp_path / "nan.wav", x, 16_000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan\.wav: the audio contains 1 NaN or infinite sample\(s\)"):
        load_audio(tmp_path / "nan.wav")


def test_more_than_two_channels(tmp_path):
    with pytest.raises(ValueError) as error:
        load_audio(np.zeros((3, 1000), np.float32))
    assert one_line(error) == ("<numpy array of shape [3, 1000]>: 3 channels found, at most 2 (mono or stereo) "
                               "are supported (shape [3, 1000])")
    soundfile.write(tmp_path / "six.wav", np.zeros((4, 6), np.float32), 16_000)  # fewer frames than channels
    with pytest.raises(ValueError, match=r"six\.wav: 6 channels found"):
        load_audio(tmp_path / "six.wav")


def test_three_dims():
    with pytest.raises(ValueError, match=r"expected audio of shape \[N\], \[C, N\] or \[N, C\], got \[1, 1, 100\]"):
        load_audio(torch.zeros(1, 1, 100))


@pytest.mark.parametrize("rate", [0, -16_000, float("nan"), 1, 3999, 768_001, 10**400])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError) as error:
        load_audio(tone(100), sample_rate=rate)
    if rate == 10**400:
        assert one_line(error) == f"<numpy array of shape [100]>: sample rate {repr(rate)[:40]} is not a number"
        return
    assert one_line(error) == (f"<numpy array of shape [100]>: sample rate {rate!r} Hz is outside 4000..768000 Hz "
                               "(not a plausible audio rate)")


def _raw_reference(array: np.ndarray, subtype: str) -> np.ndarray:
    """soundfile's own reading of the same samples as a headerless file (the reference)."""
    import io

    return soundfile.read(io.BytesIO(array.tobytes()), format="RAW", subtype=subtype, samplerate=16_000, channels=1,
                          endian="LITTLE", dtype="float64")[0]


@pytest.mark.parametrize("dtype,subtype", [(np.uint8, "PCM_U8"), (np.int8, "PCM_S8"), ("<i2", "PCM_16"),
                                           ("<i4", "PCM_32"), ("<f4", "FLOAT"), ("<f8", "DOUBLE")])
def test_every_pcm_dtype_reads_as_soundfile_reads_it(dtype, subtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    if info is not None:
        samples = rng.integers(info.min, info.max, 4000, endpoint=True).astype(dtype)
        samples[:3] = [info.min, info.max, (info.min + info.max + 1) // 2]  # extremes and silence
    else:
        samples = rng.uniform(-1, 1, 4000).astype(dtype)
    ours = load_audio(samples).samples
    reference = _raw_reference(samples, subtype)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-7)
    if info is not None:
        assert ours[2] == 0.0  # the integer midpoint is silence


def test_uint8_is_centred_not_only_scaled():
    # 8-bit audio is unsigned: used to come back in [0.43, 1.58] with mean 1.0
    tone8 = np.round(128 + 127 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000) * 0.45).astype(np.uint8)
    wave = load_audio(tone8).samples
    assert abs(float(wave.mean())) < 1e-3 and -0.46 < wave.min() < -0.44 and 0.44 < wave.max() < 0.46
    assert np.array_equal(load_audio(torch.from_numpy(tone8)).samples, wave)


def test_wider_unsigned_float16_and_bool():
    u16 = np.array([0, 32_768, 65_535], dtype=np.uint16)
    assert load_audio(u16).samples.tolist() == [-1.0, 0.0, pytest.approx(32_767 / 32_768)]
    u32 = np.array([0, 2 ** 31], dtype=np.uint32)
    assert load_audio(u32).samples.tolist() == [-1.0, 0.0]
    half = np.array([0.25, -0.5, 1.0], dtype=np.float16)
    assert load_audio(half).samples.tolist() == [0.25, -0.5, 1.0]
    assert load_audio(torch.tensor([0.25, -0.5], dtype=torch.bfloat16)).samples.tolist() == [0.25, -0.5]
    with pytest.raises(ValueError, match="dtype bool is not supported"):
        load_audio(np.ones(100, dtype=bool))


def test_check_mono_samples_names_the_source_and_the_consumer():
    from spiritlens.audio.waveform import check_mono_samples

    check_mono_samples(np.zeros(1280), 1280, source="a.wav", what="pitch tokens")
    with pytest.raises(ValueError, match=r"^a\.wav: expected a mono waveform \[N\] for pitch tokens, got shape \[2, 1600\]$"):
        check_mono_samples(np.zeros((2, 1600)), 1280, source="a.wav", what="pitch tokens")
    with pytest.raises(ValueError, match=r"^a\.wav: 1279 samples are too short for pitch tokens: at least 1280 at 16 kHz \(80 ms\)$"):
        check_mono_samples(np.zeros(1279), 1280, source="a.wav", what="pitch tokens")


def test_a_waveform_loaded_with_the_limit_lifted_stays_loadable(tmp_path):
    """The tokenizers call load_audio again on the Waveform the CLI loaded: the lifted limit holds."""
    from spiritlens.audio.waveform import MAX_SECONDS

    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(int((MAX_SECONDS + 1) * 4000), np.int16), 4000, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"long\.wav: 601\.0 s of audio, longer than the limit of 600 s"):
        load_audio(path)
    wave = load_audio(path, max_seconds=None)
    assert wave.num_samples == (MAX_SECONDS + 1) * 16_000 and load_audio(wave) is not None
    with pytest.raises(ValueError, match=r"601\.0 s of audio"):
        load_audio(wave.samples)  # a bare array is checked again
