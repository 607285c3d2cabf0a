"""/v1/audio/speech, /transcriptions and /translations through the running relay with the openai
SDK: speech streamed back as it arrives and billed per 1K characters (a download cut midway
too), transcripts in every response format billed per minute of audio, the length read from
the file (WAV, MP3) or taken from the upstream, never above the hold."""

import io
import math
import struct
import time
import wave

import httpx
import openai
import pytest

from billing.models import Hold, ModelPrice
from tests.conftest import ALICE_CREDIT, add_channel, eventually, settled_usage
from tests.mock_media import SPEECH_CHUNK, TRANSCRIPT

pytestmark = pytest.mark.django_db(transaction=True)

AUDIO_MODELS = (
    "tts-1",
    "tts-1-hd",
    "gpt-4o-mini-tts",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini",
)
TEXT = "The quick brown fox jumps over the lazy dog. " * 5  # 225 characters


@pytest.fixture
def audio_channel(mock_upstream, db):
    return add_channel(mock_upstream.url, models=AUDIO_MODELS)


def wav(seconds: float, rate: int = 16_000) -> bytes:
    """A silent mono 16-bit WAV of ``seconds``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(bytes(2 * round(seconds * rate)))
    return out.getvalue()


MP3_FRAME = struct.pack(">I", 0xFFFB9000) + bytes(413)  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz


def mp3(frames: int) -> bytes:
    """A constant-bitrate MP3 of silent frames: frames × 417 bytes at 128 kbit/s."""
    return MP3_FRAME * frames


def per_minute(model: str, seconds: float) -> int:
    return math.ceil(ModelPrice.objects.get(model=model).audio_minute_quota * seconds / 60)


def per_characters(model: str, characters: int) -> int:
    price = ModelPrice.objects.get(model=model).speech_1k_chars_quota
    return math.ceil(price * characters / 1000)


def charged(alice) -> int:
    alice.refresh_from_db()
    return ALICE_CREDIT - alice.quota


# --- Speech -------------------------------------------------------------------------------------


def test_speech_streams_the_audio_back_and_is_billed_per_1k_characters(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    client = make_openai(alice_key)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())

    assert audio == b"".join(bytes([index]) * SPEECH_CHUNK for index in range(4))
    sent = mock_upstream.requests[0]
    assert sent["path"] == "/v1/audio/speech"
    assert sent["json"] == {"model": "tts-1", "voice": "alloy", "input": TEXT}
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.status) == ("audio_speech", "tts-1", "success")
    assert log.quota == per_characters("tts-1", len(TEXT)) == 1688
    assert charged(alice) == log.quota
    books_balance()


def test_speech_keeps_the_upstream_content_type(
    alice, alice_key, audio_channel, make_openai, books_balance
):
    answer = make_openai(alice_key).audio.speech.create(
        model="tts-1-hd", voice="nova", input="Hello there.", response_format="wav"
    )

    assert answer.response.headers["content-type"] == "audio/wav"
    assert len(answer.content) == 4 * SPEECH_CHUNK
    [log] = settled_usage()
    assert log.quota == per_characters("tts-1-hd", len("Hello there.")) == 180
    books_balance()


def test_speech_arrives_chunk_by_chunk_as_the_upstream_sends_it(
    alice, alice_key, audio_channel, relay_url, mock_upstream, books_balance
):
    mock_upstream.script({"chunks": 3, "chunk_delay": 0.3})
    arrivals = []
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/audio/speech",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Hi."},
    ) as response:
        for _ in response.iter_raw():
            arrivals.append(time.monotonic())

    # The first audio came well before the last was made: nothing waited for the whole.
    assert arrivals[-1] - arrivals[0] >= 0.5
    settled_usage()
    books_balance()


def test_a_speech_download_cut_midway_is_billed_in_full(
    alice, alice_key, audio_channel, relay_url, mock_upstream, books_balance
):
    """Speech is billed by its input, which the upstream bills whole once it speaks."""
    mock_upstream.script({"chunks": 20, "chunk_delay": 0.2})
    with httpx.stream(
        "POST",
        f"{relay_url}/v1/audio/speech",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "tts-1", "voice": "alloy", "input": TEXT},
    ) as response:
        first = next(response.iter_raw())
    assert first  # some audio arrived; then the client hung up

    [log] = settled_usage()
    assert log.status == "client_gone"
    assert log.quota == per_characters("tts-1", len(TEXT))
    # The upstream was hung up on too, long before its 20 chunks.
    [event] = mock_upstream.wait_for_events()
    assert not event["completed"] and event["sent"] < 20
    eventually(lambda: Hold.objects.get().status == Hold.Status.SETTLED)
    books_balance()


def test_speech_on_a_model_without_a_speech_price_is_refused(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    with pytest.raises(openai.BadRequestError) as refused:
        make_openai(alice_key).audio.speech.create(model="whisper-1", voice="alloy", input="x")

    assert "speech is not priced" in refused.value.body["message"]
    assert mock_upstream.requests == []
    assert not Hold.objects.exists()
    books_balance()


def test_speech_longer_than_openai_takes_is_refused(alice, alice_key, audio_channel, make_openai):
    with pytest.raises(openai.BadRequestError) as refused:
        make_openai(alice_key).audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)

    assert refused.value.body["param"] == "input"


# --- Transcriptions and translations -------------------------------------------------------------

WAV = wav(2.5)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ("json", TRANSCRIPT),
        ("text", TRANSCRIPT + "\n"),
        ("srt", f"1\n00:00:00,000 --> 00:00:02,500\n{TRANSCRIPT}\n\n"),
        ("vtt", f"WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n{TRANSCRIPT}\n\n"),
        ("verbose_json", TRANSCRIPT),
    ],
)
def test_a_transcription_comes_back_in_the_format_asked_and_is_billed_per_minute(
    response_format,
    expected,
    alice,
    alice_key,
    audio_channel,
    make_openai,
    mock_upstream,
    books_balance,
):
    answer = make_openai(alice_key).audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", WAV, "audio/wav"),
        response_format=response_format,
    )

    text = answer if isinstance(answer, str) else answer.text
    assert text == expected
    if response_format == "verbose_json":
        assert answer.duration == 2.5
    [form] = mock_upstream.uploads
    assert form["fields"] == {"model": "whisper-1", "response_format": response_format}
    assert form["files"]["file"][0]["size"] == len(WAV)
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.status) == ("audio_transcriptions", "whisper-1", "success")
    assert log.quota == per_minute("whisper-1", 2.5) == 125
    assert Hold.objects.get().amount == 125  # held for the length read from the header
    assert charged(alice) == 125
    books_balance()


# The SDK marks this endpoint deprecated; clients still call it.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_a_translation_is_billed_per_minute(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).audio.translations.create(
        model="whisper-1", file=("speech.wav", wav(6), "audio/wav"), response_format="verbose_json"
    )

    assert answer.text == TRANSCRIPT
    assert mock_upstream.requests[0]["path"] == "/v1/audio/translations"
    [log] = settled_usage()
    assert log.endpoint == "audio_translations"
    assert log.quota == per_minute("whisper-1", 6) == 300
    books_balance()


def test_gpt_4o_transcribe_is_billed_from_its_audio_tokens(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"seconds": 2.0})  # 20 audio tokens reported, 2.5 s held
    make_openai(alice_key).audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("speech.wav", WAV, "audio/wav")
    )

    [log] = settled_usage()
    assert log.quota == per_minute("gpt-4o-mini-transcribe", 2.0) == 50
    assert Hold.objects.get().amount == per_minute("gpt-4o-mini-transcribe", 2.5)
    books_balance()


def test_an_mp3_is_held_for_its_length_and_a_longer_reported_length_is_not_billed(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    audio = mp3(100)  # 41,700 bytes at 128 kbit/s: 2.60625 s
    mock_upstream.script({"seconds": 9.0})
    make_openai(alice_key).audio.transcriptions.create(
        model="whisper-1", file=("speech.mp3", audio, "audio/mpeg")
    )

    [log] = settled_usage()
    assert log.quota == per_minute("whisper-1", 2.60625) == 131
    assert log.usage_flag == "clamped"
    assert log.reported_usage == {"seconds": 9.0}
    books_balance()


def test_a_file_whose_length_cannot_be_read_is_billed_by_the_upstream_length(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    """An M4A's length is not read: the hold is as long as its bytes could last at 8 kbit/s,
    and a text answer is asked of the upstream as JSON, whose usage gives the length."""
    audio = b"\x00\x00\x00\x20ftypM4A " + bytes(30_000)
    answer = make_openai(alice_key).audio.transcriptions.create(
        model="whisper-1", file=("speech.m4a", audio, "audio/mp4"), response_format="text"
    )

    assert answer == TRANSCRIPT + "\n"
    [form] = mock_upstream.uploads
    assert form["fields"]["response_format"] == "json"
    [log] = settled_usage()
    assert log.quota == per_minute("whisper-1", 3.0) == 150  # the mock's default length
    assert Hold.objects.get().amount == per_minute("whisper-1", len(audio) / 1000)
    books_balance()


def test_srt_of_an_unreadable_file_is_billed_to_its_last_cue(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"seconds": 4.5})
    make_openai(alice_key).audio.transcriptions.create(
        model="whisper-1", file=("speech.ogg", b"OggS" + bytes(20_000)), response_format="srt"
    )

    [log] = settled_usage()
    assert log.quota == per_minute("whisper-1", 4.5) == 225
    books_balance()


def test_streamed_transcriptions_are_refused(alice, alice_key, audio_channel, relay_url):
    answer = httpx.post(
        f"{relay_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {alice_key}"},
        data={"model": "gpt-4o-transcribe", "stream": "true"},
        files={"file": ("speech.wav", WAV, "audio/wav")},
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "stream"
    assert not Hold.objects.exists()


def test_a_transcription_without_a_file_is_refused(alice, alice_key, audio_channel, relay_url):
    answer = httpx.post(
        f"{relay_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {alice_key}"},
        files={"model": (None, "whisper-1")},
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "file"


def test_a_transcription_sent_as_json_is_refused(alice, alice_key, audio_channel, relay_url):
    answer = httpx.post(
        f"{relay_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "whisper-1"},
    )

    assert answer.status_code == 400
    assert "multipart/form-data" in answer.json()["error"]["message"]


def test_a_chat_model_cannot_transcribe(
    alice, alice_key, audio_channel, make_openai, books_balance
):
    with pytest.raises(openai.BadRequestError) as refused:
        make_openai(alice_key).audio.transcriptions.create(
            model="gpt-4o-mini", file=("speech.wav", WAV, "audio/wav")
        )

    assert "audio is not priced" in refused.value.body["message"]
    assert not Hold.objects.exists()
    books_balance()


def test_an_upstream_failure_releases_the_hold_of_a_transcription(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"status": 500}, {"status": 500})
    with pytest.raises(openai.InternalServerError):
        make_openai(alice_key).audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", WAV, "audio/wav")
        )

    assert charged(alice) == 0
    assert Hold.objects.get().status == Hold.Status.RELEASED
    books_balance()


def test_an_audio_model_cannot_chat_for_free(
    alice, alice_key, audio_channel, make_openai, mock_upstream, books_balance
):
    """whisper-1 is priced per minute only: its token ratio of 0 must not make chat free."""
    with pytest.raises(openai.NotFoundError) as refused:
        make_openai(alice_key).chat.completions.create(
            model="whisper-1", messages=[{"role": "user", "content": "hi"}]
        )

    assert "has no price for /v1/chat/completions" in refused.value.body["message"]
    assert mock_upstream.requests == []
    assert not Hold.objects.exists()
    books_balance()
