"""Input parsing for the studio's posts; the rules themselves live in prompt_bar, services and generation."""

from __future__ import annotations

from django import forms
from django.conf import settings

from generation.lib.sizes import megabytes
from studio.prompt_bar import MODE_COPY, MODE_MODIFY, PROMPT_MAX_LENGTH


class GenerateForm(forms.Form):
    """One press of Generate. Whether the model can run it is job_create's call (JobRequestError)."""

    prompt = forms.CharField(required=False, max_length=PROMPT_MAX_LENGTH, strip=True)
    model = forms.IntegerField(error_messages={"required": "Choose a model.", "invalid": "Choose a model."})
    images = forms.IntegerField(
        min_value=1, initial=1, error_messages={"required": "Choose how many images.", "invalid": "Choose a count."}
    )
    mode = forms.ChoiceField(choices=[(MODE_MODIFY, "Modify"), (MODE_COPY, "Copy")], required=False)
    strength = forms.FloatField(required=False, min_value=0.0, max_value=1.0)
    enhance = forms.BooleanField(required=False)
    batch = forms.BooleanField(required=False)
    ref1 = forms.UUIDField(required=False)
    ref2 = forms.UUIDField(required=False)
    character = forms.UUIDField(required=False)
    # A new key per rendered form: a double submit posts the same key and finds the first job.
    idempotency_key = forms.UUIDField(required=False)

    @property
    def references(self) -> list[str]:
        data = self.cleaned_data
        return [str(r) for r in (data.get("ref1"), data.get("ref2")) if r]


class CharacterForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        error_messages={"required": "Give the character a name.", "max_length": "Keep the name under 100 characters."},
    )


class UploadForm(forms.Form):
    image = forms.FileField(error_messages={"required": "Choose an image to upload.", "empty": "The file is empty."})

    def clean_image(self):
        upload = self.cleaned_data["image"]
        # Checked before a single byte is decoded: Django's upload memory settings are not caps.
        if upload.size > settings.UPLOAD_MAX_BYTES:
            limit = megabytes(settings.UPLOAD_MAX_BYTES)
            raise forms.ValidationError(f"The file is too large: the limit is {limit}.", code="too_large")
        return upload
