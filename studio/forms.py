"""Input parsing for the studio's posts; the rules themselves live in prompt_bar, services and generation."""

from __future__ import annotations

from django import forms
from django.conf import settings

from generation.lib.sizes import megabytes
from generation.prompts import QUALITY_FAST, QUALITY_HIGH
from studio import wizard
from studio.prompt_bar import MODE_COPY, MODE_MODIFY, PART_MAX_LENGTH, PROMPT_MAX_LENGTH


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
    # The prompt builder's parts: a preset's words or the user's own (generation.prompts.PromptBuilder).
    scene = forms.CharField(required=False, max_length=PART_MAX_LENGTH, strip=True)
    outfit = forms.CharField(required=False, max_length=PART_MAX_LENGTH, strip=True)
    style = forms.CharField(required=False, max_length=PART_MAX_LENGTH, strip=True)
    quality = forms.ChoiceField(
        required=False,
        choices=[(QUALITY_FAST, "Fast"), (QUALITY_HIGH, "High")],
        error_messages={"invalid_choice": "Choose Fast or High quality."},
    )
    # The selected character's trained LoRA (shown only once one is ready) and its strength.
    lora = forms.BooleanField(required=False)
    lora_scale = forms.FloatField(
        required=False, min_value=0.0, max_value=2.0, error_messages={"invalid": "The LoRA's strength is a number."}
    )
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


# --- The character wizard (studio.wizard) and the character page ------------------------------


def _choice(label: str, choices: list[tuple[str, str]], *, required: bool = True) -> forms.ChoiceField:
    options = ([] if required else [("", "No preference")]) + choices
    what = label.lower()
    return forms.ChoiceField(
        label=label,
        choices=options,
        required=required,
        error_messages={
            "required": f"Choose a {what}.",
            "invalid_choice": f"Choose one of the listed options for {what}.",
        },
    )


class WizardNameForm(CharacterForm):
    """Step 1. Whether the owner already uses the name is the view's check (it knows the owner)."""


class AppearanceForm(forms.Form):
    gender = _choice("Gender presentation", wizard.GENDER)
    age = _choice("Age range", wizard.AGE)
    ethnicity = _choice("Ethnicity", wizard.ETHNICITY, required=False)
    body = _choice("Body type", wizard.BODY, required=False)
    hair_color = _choice("Hair colour", wizard.HAIR_COLOR)
    hair_style = _choice("Hair style", wizard.HAIR_STYLE, required=False)
    eye_color = _choice("Eye colour", wizard.EYE_COLOR)
    features = forms.CharField(
        label="Distinguishing features",
        required=False,
        max_length=200,
        strip=True,
        help_text="Freckles, a scar over the left brow, round glasses...",
        error_messages={"max_length": "Keep the features under 200 characters."},
    )


class IdentityForm(forms.Form):
    personality = forms.CharField(
        label="Personality",
        required=False,
        max_length=200,
        strip=True,
        help_text="A few words: playful, curious, confident.",
        error_messages={"max_length": "Keep the personality under 200 characters."},
    )
    style = _choice("Default style", wizard.STYLE)
    content_mode = _choice("Content mode", wizard.CONTENT_MODE)


class CharacterEditForm(CharacterForm, AppearanceForm, IdentityForm):
    """The character page: every wizard answer, editable later, in the wizard's order."""

    field_order = ["name", *wizard.APPEARANCE_KEYS, *wizard.IDENTITY_KEYS]
