"""Staff edit the prompt presets and profile picture sets in admin; a set keeps 4 to 8 shots."""

from __future__ import annotations

import pytest
from django.forms import inlineformset_factory
from django.urls import reverse

from studio.admin import ProfileShotFormSet
from studio.models import ProfileSet, ProfileShot, PromptPreset

pytestmark = pytest.mark.django_db

ShotForms = inlineformset_factory(
    ProfileSet, ProfileShot, formset=ProfileShotFormSet, fields=["name", "framing"], extra=0, can_delete=True
)


def shot_data(count: int) -> dict[str, str]:
    data = {"shots-TOTAL_FORMS": str(count), "shots-INITIAL_FORMS": "0"}
    for i in range(count):
        data[f"shots-{i}-name"] = f"Shot {i}"
        data[f"shots-{i}-framing"] = "waist up"
    return data


@pytest.mark.parametrize(("count", "valid"), [(3, False), (4, True), (8, True), (9, False)])
def test_a_set_has_four_to_eight_shots(count, valid):
    forms = ShotForms(shot_data(count), instance=ProfileSet(name="New set"), prefix="shots")
    assert forms.is_valid() is valid
    if not valid:
        assert f"A set has 4 to 8 shots; this one has {count}." in forms.non_form_errors()


def test_the_seeded_presets_and_sets_are_listed_for_staff(staff_client):
    assert PromptPreset.objects.filter(kind="scene").count() >= 5
    assert set(ProfileSet.objects.values_list("name", flat=True)) >= {
        "Dating profile",
        "Professional headshots",
        "Social avatars",
        "Fantasy portraits",
    }
    page = staff_client.get(reverse("admin:studio_profileset_changelist")).content.decode()
    assert "Dating profile" in page
    assert staff_client.get(reverse("admin:studio_promptpreset_changelist")).status_code == 200
