"""/v1/images/generations, /edits and /variations through the running relay with the openai SDK:
per-image prices by size and quality, gpt-image-1 by its reported tokens, uploads streamed to
the upstream unchanged (a 50 MB one without holding it in memory), refusals."""

import base64
import hashlib
import io
import tracemalloc

import httpx
import openai
import pytest

from billing.models import Hold, ModelPrice, UsageLog
from tests.charges import expected_charge
from tests.conftest import ALICE_CREDIT, add_channel, settled_usage
from tests.mock_media import PNG

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-4o-mini")


@pytest.fixture
def image_channel(mock_upstream, db):
    return add_channel(mock_upstream.url, models=IMAGE_MODELS)


def per_image(model: str, key: str) -> int:
    return ModelPrice.objects.get(model=model).image_quotas[key]


def charged(alice) -> int:
    alice.refresh_from_db()
    return ALICE_CREDIT - alice.quota


def test_dall_e_2_urls_are_billed_per_image_at_the_size_asked(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).images.generate(
        model="dall-e-2", prompt="a lighthouse", n=3, size="512x512", response_format="url"
    )

    assert [image.url for image in answer.data] == [
        f"https://images.example/mock-{index}.png" for index in range(3)
    ]
    [sent] = mock_upstream.requests
    assert sent["path"] == "/v1/images/generations"
    assert sent["json"]["n"] == 3 and sent["json"]["size"] == "512x512"
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.status) == ("images_generations", "dall-e-2", "success")
    assert log.quota == 3 * per_image("dall-e-2", "512x512") == 27_000
    assert charged(alice) == log.quota
    books_balance()


def test_dall_e_3_hd_b64_is_billed_at_the_hd_price_of_its_size(
    alice, alice_key, image_channel, make_openai, books_balance
):
    answer = make_openai(alice_key).images.generate(
        model="dall-e-3",
        prompt="a lighthouse",
        size="1792x1024",
        quality="hd",
        response_format="b64_json",
    )

    assert base64.b64decode(answer.data[0].b64_json) == PNG
    assert answer.data[0].revised_prompt == "a lighthouse"
    [log] = settled_usage()
    assert log.quota == per_image("dall-e-3", "1792x1024/hd") == 60_000
    assert charged(alice) == 60_000
    books_balance()


def test_a_model_without_a_model_field_is_dall_e_2(
    alice, alice_key, image_channel, relay_url, mock_upstream, books_balance
):
    answer = httpx.post(
        f"{relay_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"prompt": "a lighthouse"},
    )

    assert answer.status_code == 200, answer.text
    assert mock_upstream.requests[0]["json"]["model"] == "dall-e-2"
    [log] = settled_usage()
    assert (log.model, log.quota) == ("dall-e-2", per_image("dall-e-2", "1024x1024"))
    books_balance()


def test_fewer_images_than_asked_are_billed_as_made(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"images": 1})
    answer = make_openai(alice_key).images.generate(
        model="dall-e-2", prompt="a lighthouse", n=4, size="256x256"
    )

    assert len(answer.data) == 1
    [log] = settled_usage()
    assert log.quota == per_image("dall-e-2", "256x256") == 8_000
    assert Hold.objects.get().amount == 4 * 8_000  # held for every image asked
    books_balance()


def test_gpt_image_1_is_billed_by_the_tokens_it_reports(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).images.generate(
        model="gpt-image-1", prompt="a lighthouse at dusk", n=2
    )

    assert len(answer.data) == 2 and answer.usage.output_tokens == 2 * 1056
    [log] = settled_usage()
    # The mock counts 4 prompt tokens and makes two square medium images.
    assert (log.input_tokens, log.output_tokens) == (4, 2 * 1056)
    assert log.quota == expected_charge("gpt-image-1", input=4, output=2 * 1056)
    # Held for two of the largest high-quality images ("auto" may pick them).
    hold = Hold.objects.get()
    assert hold.amount >= expected_charge("gpt-image-1", output=2 * 6240)
    assert charged(alice) == log.quota
    books_balance()


def test_gpt_image_1_usage_beyond_what_was_asked_is_not_billed_whole(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"usage": {"output_tokens": 10_000_000}})
    make_openai(alice_key).images.generate(
        model="gpt-image-1", prompt="a lighthouse", quality="low", size="1024x1024"
    )

    [log] = settled_usage()
    assert log.usage_flag == "rejected"
    assert log.output_tokens == 272  # one low square image, counted locally
    assert log.quota <= Hold.objects.get().amount
    books_balance()


def test_an_edit_sends_the_image_and_mask_upstream_unchanged(
    alice, alice_key, mock_upstream, make_openai, books_balance
):
    add_channel(
        mock_upstream.url, models=["dall-e-2"], model_mapping={"dall-e-2": "dall-e-2-mirror"}
    )
    image = PNG + bytes(range(256)) * 40
    mask = PNG + b"mask" * 100

    answer = make_openai(alice_key).images.edit(
        model="dall-e-2",
        image=("photo.png", io.BytesIO(image), "image/png"),
        mask=("mask.png", io.BytesIO(mask), "image/png"),
        prompt="add a boat",
        n=2,
        size="256x256",
    )

    assert len(answer.data) == 2
    [form] = mock_upstream.uploads
    assert form["fields"]["model"] == "dall-e-2-mirror"  # the channel's name for the model
    assert form["fields"]["prompt"] == "add a boat" and form["fields"]["n"] == "2"
    [sent_image] = form["files"]["image"]
    [sent_mask] = form["files"]["mask"]
    assert (sent_image["filename"], sent_image["content_type"]) == ("photo.png", "image/png")
    assert sent_image["sha256"] == hashlib.sha256(image).hexdigest()
    assert sent_mask["sha256"] == hashlib.sha256(mask).hexdigest()
    [log] = settled_usage()
    assert (log.endpoint, log.model, log.upstream_model) == (
        "images_edits",
        "dall-e-2",
        "dall-e-2-mirror",
    )
    assert log.quota == 2 * per_image("dall-e-2", "256x256")
    books_balance()


# The SDK marks this endpoint deprecated; clients still call it.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_a_variation_is_billed_per_image(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    answer = make_openai(alice_key).images.create_variation(
        model="dall-e-2", image=("photo.png", io.BytesIO(PNG), "image/png"), n=2
    )

    assert len(answer.data) == 2
    assert mock_upstream.requests[0]["path"] == "/v1/images/variations"
    [log] = settled_usage()
    assert log.quota == 2 * per_image("dall-e-2", "1024x1024")
    books_balance()


def test_gpt_image_1_edit_holds_for_its_input_images_and_bills_what_is_reported(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    make_openai(alice_key).images.edit(
        model="gpt-image-1",
        image=("photo.png", io.BytesIO(PNG), "image/png"),
        prompt="add a boat",
        quality="low",
        size="1024x1024",
    )

    [log] = settled_usage()
    # The mock reports 500 tokens per input image, 3 prompt words, one low square image.
    assert (log.input_tokens, log.output_tokens) == (503, 272)
    assert log.quota == expected_charge("gpt-image-1", input=503, output=272)
    books_balance()


def test_an_edit_without_an_image_is_refused(alice, alice_key, image_channel, relay_url):
    answer = httpx.post(
        f"{relay_url}/v1/images/edits",
        headers={"Authorization": f"Bearer {alice_key}"},
        data={"model": "dall-e-2", "prompt": "add a boat"},
        files={"mask": ("mask.png", PNG, "image/png")},
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "image"
    assert not Hold.objects.exists()


def test_a_size_without_a_price_is_refused_and_nothing_is_held(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    with pytest.raises(openai.BadRequestError) as refused:
        make_openai(alice_key).images.generate(model="dall-e-2", prompt="x", size="4096x4096")

    assert refused.value.body["param"] == "size"
    assert "not priced" in refused.value.body["message"]
    assert mock_upstream.requests == []
    assert not Hold.objects.exists()
    books_balance()


def test_a_model_priced_only_by_tokens_for_chat_cannot_make_images(
    alice, alice_key, image_channel, make_openai, books_balance
):
    ModelPrice.objects.filter(model="gpt-4o-mini").update(model_ratio=0)
    with pytest.raises(openai.BadRequestError) as refused:
        make_openai(alice_key).images.generate(model="gpt-4o-mini", prompt="x")

    assert "not priced" in refused.value.body["message"]
    books_balance()


def test_streamed_images_are_refused(alice, alice_key, image_channel, relay_url):
    answer = httpx.post(
        f"{relay_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "gpt-image-1", "prompt": "x", "stream": True},
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "stream"


def test_images_on_an_anthropic_only_model_are_refused(
    alice, alice_key, mock_upstream, make_openai
):
    add_channel(mock_upstream.url, type="anthropic", models=["dall-e-3"])
    with pytest.raises(openai.NotFoundError) as refused:
        make_openai(alice_key).images.generate(model="dall-e-3", prompt="x")

    assert "cannot be used with /v1/images/generations" in refused.value.body["message"]


def test_an_upstream_failure_releases_the_hold(
    alice, alice_key, image_channel, make_openai, mock_upstream, books_balance
):
    mock_upstream.script({"status": 400, "error_message": "Your prompt was rejected."})
    with pytest.raises(openai.BadRequestError):
        make_openai(alice_key).images.generate(model="dall-e-3", prompt="x")

    assert charged(alice) == 0
    assert Hold.objects.get().status == Hold.Status.RELEASED
    books_balance()


def test_an_upload_above_the_multipart_limit_is_refused_with_a_413(
    alice, alice_key, image_channel, make_openai, mock_upstream, settings, books_balance
):
    settings.RELAY_MAX_BODY_BYTES = 64 * 1024
    with pytest.raises(openai.APIStatusError) as refused:
        make_openai(alice_key).images.edit(
            model="dall-e-2",
            image=("big.png", io.BytesIO(PNG + bytes(100_000)), "image/png"),
            prompt="x",
        )

    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "request_too_large"
    assert refused.value.body["type"] == "invalid_request_error"
    assert mock_upstream.requests == []
    assert not Hold.objects.exists()
    books_balance()


UPLOAD_BYTES = 50 * 1024 * 1024
PIECE = bytes(range(256)) * 256  # 64 KB


def fifty_megabyte_form(boundary: str):
    """A form with a 50 MB image, made a piece at a time (the client holds none of it)."""
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="model"\r\n\r\ndall-e-2\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="prompt"\r\n\r\nadd a boat\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    yield PNG
    for _ in range((UPLOAD_BYTES - len(PNG)) // len(PIECE)):
        yield PIECE
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_50_mb_upload_streams_through_without_growing_memory(
    alice, alice_key, image_channel, relay_url, mock_upstream, books_balance
):
    expected = hashlib.sha256(PNG)
    for _ in range((UPLOAD_BYTES - len(PNG)) // len(PIECE)):
        expected.update(PIECE)
    boundary = "sluice-test-boundary-7d1f"
    headers = {
        "Authorization": f"Bearer {alice_key}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    # A first small call loads what a server loads once (the tokenizer's tables, ~25 MB).
    small = next(fifty_megabyte_form(boundary)) + PNG + f"\r\n--{boundary}--\r\n".encode()
    assert httpx.post(f"{relay_url}/v1/images/edits", headers=headers, content=small).is_success
    mock_upstream.reset()
    tracemalloc.start()
    try:
        answer = httpx.post(
            f"{relay_url}/v1/images/edits",
            headers=headers,
            content=fifty_megabyte_form(boundary),
            timeout=60,
        )
        # Everything in this process (client, relay, mock upstream) together, at its peak.
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answer.status_code == 200, answer.text
    [form] = mock_upstream.uploads
    [image] = form["files"]["image"]
    assert image["size"] == len(PNG) + (UPLOAD_BYTES - len(PNG)) // len(PIECE) * len(PIECE)
    assert image["sha256"] == expected.hexdigest()
    print(f"traced peak during the 50 MB upload: {peak / 2**20:.2f} MB")
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MB"
    _, log = settled_usage(2)
    assert log.quota == per_image("dall-e-2", "1024x1024")
    assert UsageLog.objects.count() == 2
    books_balance()


def test_a_form_is_parsed_whatever_pieces_its_boundaries_fall_across(monkeypatch):
    """Boundaries are searched a piece at a time: one cut by a piece's end is still found."""
    from relay import media

    boundary = "b0undary"
    image = PNG + b"--b0und" + bytes(50)  # looks like the start of a boundary, is not one
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ndall-e-2\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    for piece in (1, 5, 7, 13, 64, 4096):
        monkeypatch.setattr(media, "SCAN_BYTES", piece)
        upload = media.Upload(
            io.BytesIO(body), len(body), f"multipart/form-data; boundary={boundary}"
        )
        form = upload.form
        assert form.fields == {"model": "dall-e-2"}, piece
        [part] = form.files("image")
        assert (part.filename, part.content_type) == ("a.png", "image/png")
        assert body[part.start : part.end] == image, piece


def test_an_upload_is_sent_whole_to_the_next_channel_when_the_first_fails(
    alice, alice_key, mock_upstream, make_openai, books_balance
):
    add_channel(mock_upstream.url, name="first", models=["dall-e-2"], priority=10)
    add_channel(mock_upstream.url, name="second", models=["dall-e-2"], priority=1)
    mock_upstream.script({"status": 503})
    image = PNG + bytes(range(256)) * 1000

    make_openai(alice_key).images.edit(
        model="dall-e-2", image=("photo.png", io.BytesIO(image), "image/png"), prompt="x"
    )

    assert len(mock_upstream.requests) == 2
    [form] = mock_upstream.uploads  # the first was refused before its form was read
    assert form["files"]["image"][0]["sha256"] == hashlib.sha256(image).hexdigest()
    [log] = settled_usage()
    assert log.quota == per_image("dall-e-2", "1024x1024")
    books_balance()
