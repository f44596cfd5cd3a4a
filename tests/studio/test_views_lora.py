"""The LoRA loop's pages: the sheet from the character page, the dataset page, the ZIP, trainings and
the LoRA file; another user's character, dataset item, training and file answer 404."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from generation.models import CreditAccount, GenerationJob, JobKind, LoraTraining, TrainingStatus
from generation.services.credits import credit_account
from studio.models import Character, DatasetItem
from tests.factories import seeded_model
from tests.studio.helpers import htmx, make_asset, make_character, make_ready_training
from tests.studio.test_dataset import make_sheet

pytestmark = pytest.mark.django_db


@pytest.fixture
def trainer(db):
    return seeded_model("offline/lora-trainer")


@pytest.fixture
def aria(alice):
    return make_character(alice, "Aria", locked_reference=make_asset(alice), appearance={"gender": "woman"})


def url(name, *args):
    return reverse(f"studio:{name}", args=args)


def test_the_character_page_starts_a_sheet_of_the_chosen_size(alice_client, aria, model, enqueued):
    page = alice_client.get(url("character", aria.pk)).content.decode()
    assert "Make sheet" in page and 'value="12"' in page

    response = alice_client.post(url("character-sheet", aria.pk), {"images": "9"})

    job = GenerationJob.objects.get(kind=JobKind.CHARACTER_SHEET)
    assert job.images_requested == 9 and job.character == aria
    assert response.status_code == 302 and response.url.endswith(f"#job-{job.pk}")
    card = alice_client.get(url("character", aria.pk)).content.decode()
    assert "Generating 0/9" in card and "Character sheet" in card


def test_a_bad_sheet_size_is_refused_with_a_message(alice_client, aria, model):
    response = alice_client.post(url("character-sheet", aria.pk), {"images": "40"}, follow=True)
    assert "7 to 16 images, not 40" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_the_dataset_page_lists_the_sheet_with_captions_and_warnings(alice_client, alice, aria, model, trainer):
    make_sheet(alice, model, aria, images=3)
    html = alice_client.get(url("character-dataset", aria.pk)).content.decode()
    trigger = Character.objects.get(pk=aria.pk).trigger_word or html.split('name="trigger_word" value="')[1][:7]
    assert f"{trigger} woman, angle 0, plain grey background" in html
    assert "3 images included: this trainer advises at least 4." in html
    assert "under 1024 px" in html
    assert "Offline LoRA trainer" in html and "1 credit" in html


def test_exclude_and_caption_edits_answer_the_row_to_htmx(alice_client, alice, aria, model, trainer):
    make_sheet(alice, model, aria, images=2)
    alice_client.get(url("character-dataset", aria.pk))
    item = DatasetItem.objects.filter(character=aria).first()

    row = alice_client.post(url("character-dataset-item", aria.pk, item.pk), {"included": "0"}, **htmx())
    assert row.status_code == 200 and "is-excluded" in row.content.decode() and "<html" not in row.content.decode()
    alice_client.post(url("character-dataset-item", aria.pk, item.pk), {"caption": "aria woman, laughing"}, **htmx())
    item.refresh_from_db()
    assert not item.included and item.caption == "aria woman, laughing"

    bad = alice_client.post(url("character-dataset-item", aria.pk, item.pk), {"caption": " "}, **htmx())
    assert "cannot be empty" in bad.content.decode()


def test_the_trigger_word_form_validates(alice_client, aria, trainer):
    bad = alice_client.post(url("character-dataset-trigger", aria.pk), {"trigger_word": "two words"})
    assert bad.status_code == 400 and "one token of 2 to 32" in bad.content.decode()
    alice_client.post(url("character-dataset-trigger", aria.pk), {"trigger_word": "aria_k7"})
    aria.refresh_from_db()
    assert aria.trigger_word == "aria_k7"


def test_the_zip_downloads_streamed_with_the_included_images(alice_client, alice, aria, model, trainer):
    make_sheet(alice, model, aria, images=2)
    alice_client.post(url("character-dataset-trigger", aria.pk), {"trigger_word": "aria_k7"})
    alice_client.get(url("character-dataset", aria.pk))

    response = alice_client.get(url("character-dataset-zip", aria.pk))

    assert response.streaming and response["Content-Disposition"] == 'attachment; filename="aria_k7-dataset.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == ["01.png", "01.txt", "02.png", "02.txt", "manifest.json"]
    assert archive.read("02.txt").decode() == "aria_k7 woman, angle 1, plain grey background"


def test_training_needs_the_price_confirmed_and_charges_it(alice_client, alice, aria, model, trainer, enqueued):
    make_sheet(alice, model, aria, images=4)
    alice_client.get(url("character-dataset", aria.pk))
    before = credit_account(alice).balance

    unconfirmed = alice_client.post(url("character-training-start", aria.pk), {"trainer": trainer.pk}, follow=True)
    assert "Confirm the price" in unconfirmed.content.decode() and not LoraTraining.objects.exists()

    stale = alice_client.post(
        url("character-training-start", aria.pk), {"trainer": trainer.pk, "confirm": "1", "credits": "5"}, follow=True
    )
    assert "The price has changed" in stale.content.decode() and not LoraTraining.objects.exists()

    alice_client.post(url("character-training-start", aria.pk), {"trainer": trainer.pk, "confirm": "1", "credits": "1"})
    training = LoraTraining.objects.get()
    assert training.status == TrainingStatus.QUEUED and training.images == 4 and training.credits_charged == 1
    assert CreditAccount.objects.get(user=alice).balance == before - 1

    panel = alice_client.get(url("character-training", aria.pk, training.pk))
    assert panel.status_code == 200 and "Queued" in panel.content.decode()
    alice_client.post(url("character-training-cancel", aria.pk, training.pk))
    training.refresh_from_db()
    assert training.status == TrainingStatus.CANCELED
    assert CreditAccount.objects.get(user=alice).balance == before
    assert alice_client.get(url("character-training", aria.pk, training.pk)).status_code == 286


def test_another_users_character_dataset_training_and_lora_file_answer_404(
    bob_client, alice, aria, model, trainer, enqueued
):
    make_sheet(alice, model, aria, images=2)
    from studio.dataset import dataset_sync

    dataset_sync(aria)
    item = DatasetItem.objects.filter(character=aria).first()
    training = make_ready_training(alice, aria, trainer=trainer)

    for response in (
        bob_client.get(url("character-dataset", aria.pk)),
        bob_client.post(url("character-sheet", aria.pk)),
        bob_client.post(url("character-dataset-trigger", aria.pk), {"trigger_word": "bob_k7"}),
        bob_client.post(url("character-dataset-item", aria.pk, item.pk), {"included": "0"}),
        bob_client.post(url("character-dataset-add", aria.pk), {"asset": str(item.asset_id)}),
        bob_client.get(url("character-dataset-zip", aria.pk)),
        bob_client.post(
            url("character-training-start", aria.pk), {"trainer": trainer.pk, "confirm": "1", "credits": "1"}
        ),
        bob_client.get(url("character-training", aria.pk, training.pk)),
        bob_client.post(url("character-training-cancel", aria.pk, training.pk)),
        bob_client.get(url("character-lora-file", aria.pk, training.pk)),
    ):
        assert response.status_code == 404
    item.refresh_from_db()
    assert item.included


def test_the_owner_downloads_the_lora_file(alice_client, alice, aria, trainer):
    training = make_ready_training(alice, aria, trainer=trainer)
    response = alice_client.get(url("character-lora-file", aria.pk, training.pk))
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"weights"
    assert 'filename="aria_k7.safetensors"' in response["Content-Disposition"]
